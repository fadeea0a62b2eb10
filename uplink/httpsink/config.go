package httpsink

import (
	"net/url"
	"strings"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/uplink"
)

// Config is the http sink's part of an uplink.
type Config struct {
	// URL of the collector's endpoint (http:// or https://); {gateway} and {kind} are
	// replaced.
	URL string `yaml:"url"`
	// Username and PasswordFile authenticate with HTTP basic auth.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// BearerTokenFile holds an HTTP bearer token, re-read when it changes.
	BearerTokenFile string `yaml:"bearer_token_file"`
	// Headers are added to every request.
	Headers map[string]string `yaml:"headers"`
	// TLS configures certificates for https:// URLs.
	TLS *uplink.TLS `yaml:"tls"`
	// Compression of the batch payload: none or gzip.
	Compression string `yaml:"compression"`
}

// SetDefaults implements conf.Defaulter.
func (c *Config) SetDefaults() { c.Compression = "none" }

// PayloadEncoding implements uplink.Encoder.
func (c *Config) PayloadEncoding() string {
	if c.Compression == "gzip" {
		return "gzip"
	}
	return ""
}

// Type is the http sink.
func Type() uplink.SinkType { return uplink.NewSinkType[Config]("http", New) }

// Validate checks the URL, the credentials and the headers.
func (c *Config) Validate(_ *uplink.Config, r *conf.Reporter) {
	p := r.Path("")
	if c.URL == "" {
		r.Errorf("url", "%s: an http uplink needs a url, e.g. url: https://collector.example.com/ingest/{gateway}", p)
	} else {
		if err := uplink.CheckPlaceholders(c.URL); err != nil {
			r.Errorf("url", "%s.url: %v", p, err)
		}
		pu, err := url.Parse(uplink.Expand(c.URL, "gw", "records"))
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			r.Errorf("url", "%s.url %q: expected http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH", p, c.URL)
		} else if c.TLS != nil && pu.Scheme != "https" {
			r.Errorf("tls", "%s.tls: the url %q is plain HTTP; use https://", p, c.URL)
		}
	}
	if c.PasswordFile != "" && c.Username == "" {
		r.Errorf("password_file", "%s: password_file needs a username (HTTP basic auth)", p)
	}
	if c.Username != "" && c.PasswordFile == "" {
		r.Errorf("username", "%s: username needs a password_file (HTTP basic auth)", p)
	}
	if c.BearerTokenFile != "" && c.Username != "" {
		r.Errorf("bearer_token_file", "%s: use either bearer_token_file or username/password_file, not both", p)
	}
	for k := range c.Headers {
		switch strings.ToLower(k) {
		case "content-type", "content-encoding", "content-length", "authorization", "idempotency-key":
			r.Errorf("headers", "%s.headers: %q is set by edgegate itself", p, k)
		}
	}
	uplink.ValidateCompression(r, c.Compression)
	c.TLS.Validate(r)
}

// Files implements uplink.FileNamer.
func (c *Config) Files() []uplink.File {
	fs := c.TLS.Files()
	if c.PasswordFile != "" {
		fs = append(fs, uplink.File{Key: "password_file", Path: c.PasswordFile, Kind: uplink.FileSecret})
	}
	if c.BearerTokenFile != "" {
		fs = append(fs, uplink.File{Key: "bearer_token_file", Path: c.BearerTokenFile, Kind: uplink.FileSecret})
	}
	return fs
}
