package uplink

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
)

// TLSConfig builds the client TLS config of an uplink: the CA file (default: the system's
// roots), the client certificate for mutual TLS (AWS IoT Core style X.509) and ALPN. The
// files are read now, so a missing or malformed one stops the daemon at start.
func TLSConfig(c *TLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c == nil {
		return tc, nil
	}
	tc.ServerName = c.ServerName
	tc.NextProtos = c.ALPN
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificate in it", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Secret is a credential kept in a file (a password, a bearer token). Value re-reads the
// file when it changed, so a rotated token is picked up without a restart; if the file
// becomes unreadable, the last good value stays in use.
type Secret struct {
	path string

	mu    sync.Mutex // guards value and mtime
	value string
	mtime int64
}

// NewSecret reads path now: a missing credential is a start-up error, not a runtime one.
func NewSecret(path string) (*Secret, error) {
	s := &Secret{path: path}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Secret) load() error {
	st, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("read secret: %w", err)
	}
	if st.ModTime().UnixNano() == s.mtime && s.value != "" {
		return nil
	}
	b, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("read secret: %w", err)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) == 0 {
		return fmt.Errorf("read secret: %s is empty", s.path)
	}
	s.value, s.mtime = string(b), st.ModTime().UnixNano()
	return nil
}

// Value returns the current secret.
func (s *Secret) Value() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.load() // keep the last good value on error
	return s.value
}
