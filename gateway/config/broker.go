package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/topic"
)

// Broker configures the embedded MQTT broker, the local topic layer (SPEC §2): its
// listeners, who may connect and what they may do, and the limits that keep one hostile
// or buggy device from hurting the others.
type Broker struct {
	Listeners []Listener `yaml:"listeners"`
	// AllowAnonymous lets clients connect without a username; they get the Anonymous
	// grants. Off by default: only configured users may connect.
	AllowAnonymous bool `yaml:"allow_anonymous"`
	// Anonymous are the grants of anonymous clients (each list defaults to ["#"]).
	Anonymous Grants `yaml:"anonymous"`
	// Users are the accounts devices and local clients log in with.
	Users []User `yaml:"users"`

	// MaxPacketBytes bounds an MQTT packet; larger ones close the connection before the
	// packet is read (MQTT 5 clients are told the limit in the CONNACK).
	MaxPacketBytes conf.ByteSize `yaml:"max_packet_bytes"`
	// MaxClients bounds open connections, authenticated or not, over all listeners.
	MaxClients int `yaml:"max_clients"`
	// MaxConnectionsPerIP bounds open connections from one source address (IPv6: /64).
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// MaxPendingConnections bounds the connections that are open but not logged in yet
	// (before their CONNECT was accepted), over all listeners, and MaxPendingPerIP those
	// from one source address: sockets that never log in cannot take the slots of
	// devices that do.
	MaxPendingConnections int `yaml:"max_pending_connections"`
	MaxPendingPerIP       int `yaml:"max_pending_per_ip"`
	// MaxConnectRatePerIP bounds the new connections one source address may open per
	// second (bursts of max(rate, max_pending_per_ip)); more are closed at accept, before
	// anything is read or allocated, so a connection flood costs the gateway little.
	MaxConnectRatePerIP float64 `yaml:"max_connect_rate_per_ip"`
	// ConnectTimeout is how long a new connection may take to complete TLS, the WebSocket
	// upgrade and its CONNECT packet.
	ConnectTimeout conf.Duration `yaml:"connect_timeout"`
	// MaxRatePerClient is each client's sustained PUBLISH rate (messages/s, token bucket,
	// burst of one second). A client over it is slowed down: its socket is read no faster
	// than its rate allows (TCP backpressure), nothing is refused.
	MaxRatePerClient float64 `yaml:"max_rate_per_client"`
	// FloodAfter is how long a client may be held at its rate without a pause (it always
	// has its next packet ready when its token comes) before it is disconnected as a
	// flood.
	FloodAfter conf.Duration `yaml:"flood_after"`
	// WriteTimeout bounds every write to a client's socket: a client that does not read
	// what the broker sends it (acknowledgements, messages) for that long is disconnected,
	// so that it cannot hold what other clients need.
	WriteTimeout conf.Duration `yaml:"write_timeout"`
	// MaxTopicBytes and MaxTopicLevels bound topic names and filters.
	MaxTopicBytes  int `yaml:"max_topic_bytes"`
	MaxTopicLevels int `yaml:"max_topic_levels"`
	// MaxSubscriptionsPerClient bounds the topic filters one client holds.
	MaxSubscriptionsPerClient int `yaml:"max_subscriptions_per_client"`
	// MaxInflight bounds the QoS 1/2 messages stored for one subscriber awaiting its ack
	// (online or in a persistent session).
	MaxInflight int `yaml:"max_inflight"`
	// MaxQueuedMessages bounds the messages waiting to be written to one subscriber's
	// socket; a subscriber that falls further behind loses QoS 0 messages.
	MaxQueuedMessages int `yaml:"max_queued_messages"`
	// MaxRetainedMessages bounds the retained messages of the whole broker, and
	// MaxRetainedBytes their payload bytes; MaxRetainedPerUser and
	// MaxRetainedBytesPerUser bound those of one user (wills included).
	MaxRetainedMessages     int           `yaml:"max_retained_messages"`
	MaxRetainedBytes        conf.ByteSize `yaml:"max_retained_bytes"`
	MaxRetainedPerUser      int           `yaml:"max_retained_per_user"`
	MaxRetainedBytesPerUser conf.ByteSize `yaml:"max_retained_bytes_per_user"`
	// MaxWillBytes bounds the payload of a will message (refused at CONNECT beyond it):
	// every connection holds its will in memory until it ends. max_packet_bytes bounds it
	// too.
	MaxWillBytes conf.ByteSize `yaml:"max_will_bytes"`
	// MaxSessions bounds the persistent sessions (connected or not) of the whole broker,
	// MaxSessionsPerUser those of one user; a CONNECT asking for one more is refused.
	MaxSessions        int `yaml:"max_sessions"`
	MaxSessionsPerUser int `yaml:"max_sessions_per_user"`
	// MaxQueuedBytesPerSession bounds what waits for one subscriber's acknowledgement
	// (online, or queued for an offline persistent session), MaxQueuedBytes that of all
	// subscribers: payload, topic and a fixed overhead per message. A message over
	// either is not queued for that subscriber (counted).
	MaxQueuedBytesPerSession conf.ByteSize `yaml:"max_queued_bytes_per_session"`
	MaxQueuedBytes           conf.ByteSize `yaml:"max_queued_bytes"`
	// MaxSessionExpiry caps how long a disconnected persistent session is kept.
	MaxSessionExpiry conf.Duration `yaml:"max_session_expiry"`
	// RefusedLog bounds the log of permanently refused messages.
	RefusedLog RefusedLog `yaml:"refused_log"`
}

// RefusedLog bounds the `refused` log of the buffer, where messages refused for good
// (malformed, not authorized, too large, invalid topic, over a broker-wide cap) are kept
// with their reason: inspectable, never forwarded, trimmed oldest first past either bound.
type RefusedLog struct {
	MaxEntries int           `yaml:"max_entries"`
	MaxBytes   conf.ByteSize `yaml:"max_bytes"`
}

// Listener is one socket of the broker.
type Listener struct {
	// Type is tcp, tls or ws (WebSocket; with cert_file and key_file, wss).
	Type    string `yaml:"type"`
	Address string `yaml:"address"`
	// CertFile and KeyFile are the PEM server certificate (chain) and key (tls, ws).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, requires every client to present a certificate signed by
	// one of these PEM CAs (mutual TLS).
	ClientCAFile string `yaml:"client_ca_file"`
}

// TLS reports whether the listener encrypts.
func (l Listener) TLS() bool { return l.CertFile != "" }

// User is one account. Its grants are topic filters in which {username} or %u stands for
// the user name and {clientid} or %c for the client id.
type User struct {
	Username string `yaml:"username"`
	// PasswordHash is a bcrypt hash, as printed by `edgegate passwd`.
	PasswordHash string   `yaml:"password_hash"`
	Publish      []string `yaml:"publish"`
	Subscribe    []string `yaml:"subscribe"`
	// ClientIDs, when set, are the only client ids the user may connect with, and no
	// other user may use one they match: patterns where {username} or %u stands for the
	// user name and * for any run of characters. Unset: any client id, bound to the first
	// user that holds it (see README "Client ids belong to users").
	ClientIDs []string `yaml:"client_ids"`
}

// Grants are the topic filters a client may publish to and subscribe to. Nothing is
// allowed that no filter covers.
type Grants struct {
	Publish   []string `yaml:"publish"`
	Subscribe []string `yaml:"subscribe"`
}

func defaultBroker() Broker {
	return Broker{
		Listeners:                 []Listener{{Type: "tcp", Address: ":1883"}},
		Anonymous:                 Grants{Publish: []string{"#"}, Subscribe: []string{"#"}},
		MaxPacketBytes:            64 << 10,
		MaxClients:                1000,
		MaxConnectionsPerIP:       64,
		MaxPendingConnections:     256,
		MaxPendingPerIP:           16,
		MaxConnectRatePerIP:       20,
		ConnectTimeout:            conf.Duration(10 * time.Second),
		MaxRatePerClient:          1000,
		FloodAfter:                conf.Duration(30 * time.Second),
		WriteTimeout:              conf.Duration(15 * time.Second),
		MaxTopicBytes:             512,
		MaxTopicLevels:            16,
		MaxSubscriptionsPerClient: 100,
		MaxInflight:               128,
		MaxQueuedMessages:         256,
		MaxRetainedMessages:       1000,
		MaxRetainedBytes:          8 << 20,
		MaxRetainedPerUser:        100,
		MaxRetainedBytesPerUser:   1 << 20,
		MaxWillBytes:              4 << 10,
		MaxSessions:               1000,
		MaxSessionsPerUser:        8,
		MaxQueuedBytesPerSession:  1 << 20,
		MaxQueuedBytes:            24 << 20,
		MaxSessionExpiry:          conf.Duration(24 * time.Hour),
		RefusedLog:                RefusedLog{MaxEntries: 10000, MaxBytes: 8 << 20},
	}
}

// SetDefaults implements conf.Defaulter.
func (l *Listener) SetDefaults() { l.Type = "tcp" }

// maxPacketLimit keeps every accepted payload, once it is a record (base64 for binary
// formats: 4/3 of it, plus its envelope), inside one buffer value (buffer.MaxValueSize,
// about 550 KiB with the store's 4 MiB memtables).
const maxPacketLimit = 256 << 10

// ListenerTypes lists the listener types.
var ListenerTypes = []string{"tcp", "tls", "ws"}

// Placeholders of grant filters: {username} and %u, {clientid} and %c.
var (
	userPlaceholders   = []string{"{username}", "%u"}
	clientPlaceholders = []string{"{clientid}", "%c"}
)

// ExpandGrant substitutes the user name and client id into a grant filter. Both must
// already have been checked to hold no '+', '#' or '/' (see IdentityOK).
func ExpandGrant(filter, username, clientID string) string {
	if !strings.ContainsAny(filter, "{%") {
		return filter
	}
	for _, p := range userPlaceholders {
		filter = strings.ReplaceAll(filter, p, username)
	}
	for _, p := range clientPlaceholders {
		filter = strings.ReplaceAll(filter, p, clientID)
	}
	return filter
}

// IdentityOK reports whether a user name or client id may take part in a grant: non-empty
// UTF-8 of at most 256 bytes without '+', '#', '/' or control characters, not starting with
// '$', so that substituting it cannot widen a filter, cross a level or reach $SYS.
func IdentityOK(s string) bool {
	if s == "" || len(s) > 256 || !utf8.ValidString(s) || s[0] == '$' {
		return false
	}
	for _, r := range s {
		if r == '+' || r == '#' || r == '/' || r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// CheckClientIDPattern checks a users[].client_ids pattern: once {username} (or %u) is
// substituted and * stands for any run of characters, it must match client ids that
// IdentityOK accepts, and it must not match every client id.
func CheckClientIDPattern(p string) error {
	x := ExpandGrant(p, "u", "c")
	if strings.ContainsAny(x, "{") || strings.Contains(p, "{clientid}") || strings.Contains(p, "%c") {
		return fmt.Errorf("unknown placeholder (use {username} or %%u, and * for any characters)")
	}
	lit := strings.ReplaceAll(x, "*", "")
	if lit == "" {
		return fmt.Errorf("matches every client id: give it a fixed part, e.g. \"{username}-*\"")
	}
	if !IdentityOK(lit) {
		return fmt.Errorf("no client id can match it: client ids have no '+', '#', '/' or control characters and no leading '$'")
	}
	return nil
}

// MatchClientID reports whether clientID matches pattern (see CheckClientIDPattern) for
// user.
func MatchClientID(pattern, user, clientID string) bool {
	parts := strings.Split(pattern, "*") // before substituting: a user name may hold a '*'
	for i := range parts {
		parts[i] = ExpandGrant(parts[i], user, "")
	}
	if len(parts) == 1 {
		return parts[0] == clientID
	}
	if !strings.HasPrefix(clientID, parts[0]) {
		return false
	}
	rest := clientID[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, mid)
		if i < 0 {
			return false
		}
		rest = rest[i+len(mid):]
	}
	return len(rest) >= len(last) && strings.HasSuffix(rest, last)
}

// MaxPasswordCost is the highest bcrypt cost a password hash may have: every login checks
// it, and each step doubles the time on a small board.
const MaxPasswordCost = 14

func (c *Config) validateBroker(v *conf.Reporter) {
	b := &c.Broker
	b.validateListeners(v)
	validateGrants(v, "broker.anonymous", b.Anonymous, false)
	b.validateUsers(v)
	b.validateLimits(v)
}

// validateListeners checks broker.listeners.
func (b *Broker) validateListeners(v *conf.Reporter) {
	if len(b.Listeners) == 0 {
		v.Errorf("broker.listeners", "broker.listeners: at least one listener is needed, e.g. {type: tcp, address: \":1883\"}")
	}
	seen := map[string]int{}
	for i, l := range b.Listeners {
		p := fmt.Sprintf("broker.listeners[%d]", i)
		if !oneOf(l.Type, ListenerTypes...) {
			v.Errorf(p+".type", "%s.type %q: expected tcp, tls or ws", p, l.Type)
		}
		if err := checkAddress(l.Address); err != nil {
			v.Errorf(p+".address", "%s.address: %v", p, err)
		}
		if j, dup := seen[l.Address]; dup && !strings.HasSuffix(l.Address, ":0") { // port 0: any free port
			v.Errorf(p+".address", "%s.address %q is also used by broker.listeners[%d]", p, l.Address, j)
		}
		seen[l.Address] = i
		validateListenerTLS(v, p, l)
	}
}

// validateUsers checks broker.users.
func (b *Broker) validateUsers(v *conf.Reporter) {
	users := map[string]int{}
	for i, u := range b.Users {
		p := fmt.Sprintf("broker.users[%d]", i)
		if !IdentityOK(u.Username) {
			v.Errorf(p+".username", "%s.username %q: 1 to 256 bytes without '+', '#', '/' or control characters, not starting with '$'", p, u.Username)
		} else if j, dup := users[u.Username]; dup {
			v.Errorf(p+".username", "%s.username %q is also broker.users[%d]", p, u.Username, j)
		}
		users[u.Username] = i
		if u.PasswordHash == "" {
			v.Errorf(p+".password_hash", "%s.password_hash is required: run `edgegate passwd` and paste its output", p)
		} else if cost, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			v.Errorf(p+".password_hash", "%s.password_hash is not a bcrypt hash ($2a$/$2b$/$2y$...): run `edgegate passwd` and paste its output", p)
		} else if cost > MaxPasswordCost {
			v.Errorf(p+".password_hash", "%s.password_hash: bcrypt cost %d makes every login take seconds on a small board; use 10 to 12", p, cost)
		}
		validateGrants(v, p, Grants{Publish: u.Publish, Subscribe: u.Subscribe}, true)
		for j, pat := range u.ClientIDs {
			if err := CheckClientIDPattern(pat); err != nil {
				v.Errorf(fmt.Sprintf("%s.client_ids[%d]", p, j), "%s.client_ids[%d] %q: %v", p, j, pat, err)
			}
		}
	}
}

// validateLimits checks the broker's limits and timeouts.
func (b *Broker) validateLimits(v *conf.Reporter) {
	if b.MaxPacketBytes < 1024 || b.MaxPacketBytes > maxPacketLimit {
		v.Errorf("broker.max_packet_bytes", "broker.max_packet_bytes %s: expected between 1KiB and 256KiB", b.MaxPacketBytes)
	}
	atLeast := func(key string, val, min int) {
		if val < min {
			v.Errorf("broker."+key, "broker.%s %d: expected at least %d", key, val, min)
		}
	}
	atLeast("max_clients", b.MaxClients, 1)
	atLeast("max_connections_per_ip", b.MaxConnectionsPerIP, 1)
	atLeast("max_topic_levels", b.MaxTopicLevels, 1)
	atLeast("max_subscriptions_per_client", b.MaxSubscriptionsPerClient, 1)
	atLeast("max_inflight", b.MaxInflight, 1)
	atLeast("max_queued_messages", b.MaxQueuedMessages, 1)
	atLeast("max_retained_messages", b.MaxRetainedMessages, 0)
	atLeast("max_retained_per_user", b.MaxRetainedPerUser, 0)
	atLeast("max_pending_connections", b.MaxPendingConnections, 1)
	atLeast("max_pending_per_ip", b.MaxPendingPerIP, 1)
	atLeast("max_sessions", b.MaxSessions, 0)
	atLeast("max_sessions_per_user", b.MaxSessionsPerUser, 0)
	if b.MaxRetainedBytesPerUser > b.MaxRetainedBytes {
		v.Errorf("broker.max_retained_bytes_per_user", "broker.max_retained_bytes_per_user %s: expected at most max_retained_bytes (%s)", b.MaxRetainedBytesPerUser, b.MaxRetainedBytes)
	}
	if b.MaxQueuedBytesPerSession < 64<<10 {
		v.Errorf("broker.max_queued_bytes_per_session", "broker.max_queued_bytes_per_session %s: expected at least 64KiB", b.MaxQueuedBytesPerSession)
	} else if b.MaxQueuedBytes < b.MaxQueuedBytesPerSession {
		v.Errorf("broker.max_queued_bytes", "broker.max_queued_bytes %s: expected at least max_queued_bytes_per_session (%s)", b.MaxQueuedBytes, b.MaxQueuedBytesPerSession)
	}
	if b.MaxInflight > 65535 {
		v.Errorf("broker.max_inflight", "broker.max_inflight %d: expected at most 65535", b.MaxInflight)
	}
	if b.MaxTopicBytes < 16 || b.MaxTopicBytes > topic.MaxLen {
		v.Errorf("broker.max_topic_bytes", "broker.max_topic_bytes %d: expected between 16 and %d", b.MaxTopicBytes, topic.MaxLen)
	}
	if b.MaxConnectRatePerIP <= 0 {
		v.Errorf("broker.max_connect_rate_per_ip", "broker.max_connect_rate_per_ip must be > 0 (connections per second)")
	}
	if b.MaxRatePerClient <= 0 {
		v.Errorf("broker.max_rate_per_client", "broker.max_rate_per_client must be > 0 (messages per second)")
	}
	if b.FloodAfter.D() < time.Second {
		v.Errorf("broker.flood_after", "broker.flood_after %s: expected at least 1s", b.FloodAfter)
	}
	if b.WriteTimeout.D() < 100*time.Millisecond {
		v.Errorf("broker.write_timeout", "broker.write_timeout %s: expected at least 100ms", b.WriteTimeout)
	}
	if b.RefusedLog.MaxEntries < 1 {
		v.Errorf("broker.refused_log.max_entries", "broker.refused_log.max_entries %d: expected at least 1", b.RefusedLog.MaxEntries)
	}
	if b.RefusedLog.MaxBytes < 64<<10 || b.RefusedLog.MaxBytes > 1<<30 {
		v.Errorf("broker.refused_log.max_bytes", "broker.refused_log.max_bytes %s: expected between 64KiB and 1GiB", b.RefusedLog.MaxBytes)
	}
	if b.ConnectTimeout.D() < 100*time.Millisecond {
		v.Errorf("broker.connect_timeout", "broker.connect_timeout %s: expected at least 100ms", b.ConnectTimeout)
	}
	if s := b.MaxSessionExpiry.D(); s < time.Second || s > time.Duration(1<<32-1)*time.Second {
		v.Errorf("broker.max_session_expiry", "broker.max_session_expiry %s: expected between 1s and 136y", b.MaxSessionExpiry)
	}
}

func validateListenerTLS(v *conf.Reporter, p string, l Listener) {
	switch {
	case l.Type == "tcp" && (l.CertFile != "" || l.KeyFile != "" || l.ClientCAFile != ""):
		v.Errorf(p+".type", "%s: cert_file, key_file and client_ca_file need type tls (or ws for wss)", p)
		return
	case l.Type == "tls" && (l.CertFile == "" || l.KeyFile == ""):
		v.Errorf(p+".cert_file", "%s: type tls needs cert_file and key_file", p)
		return
	case l.Type == "ws" && (l.CertFile == "") != (l.KeyFile == ""):
		v.Errorf(p+".cert_file", "%s: wss needs both cert_file and key_file", p)
		return
	case l.ClientCAFile != "" && l.CertFile == "":
		v.Errorf(p+".client_ca_file", "%s.client_ca_file needs cert_file and key_file", p)
		return
	}
	if l.CertFile == "" {
		return
	}
	if _, err := LoadTLS(l); err != nil {
		v.Errorf(p+".cert_file", "%s: %v", p, err)
	}
}

// LoadTLS builds the server TLS config of a listener from its files: TLS 1.2 at least and,
// with a client CA, a verified client certificate required.
func LoadTLS(l Listener) (*tls.Config, error) {
	certPEM, err := readPEMFile(l.CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readPEMFile(l.KeyFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate %s and key %s: %w", l.CertFile, l.KeyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if l.ClientCAFile != "" {
		pem, err := readPEMFile(l.ClientCAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA %s: no PEM certificate found", l.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// maxPEMFile bounds what LoadTLS reads: a path to /dev/zero must not hang validate.
const maxPEMFile = 1 << 20

func readPEMFile(path string) ([]byte, error) {
	// Stat first: opening a FIFO would block.
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s: not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("read %s: larger than 1MiB, not a PEM file", path)
	}
	return b, nil
}

// validateGrants checks grant filters: valid MQTT filters once the placeholders are
// substituted; placeholders only where an identity exists.
func validateGrants(v *conf.Reporter, p string, g Grants, user bool) {
	for _, kind := range []struct {
		name    string
		filters []string
	}{{"publish", g.Publish}, {"subscribe", g.Subscribe}} {
		for i, f := range kind.filters {
			key := fmt.Sprintf("%s.%s[%d]", p, kind.name, i)
			if !user {
				for _, ph := range userPlaceholders {
					if strings.Contains(f, ph) {
						v.Errorf(key, "%s %q: anonymous clients have no user name for %s", key, f, ph)
					}
				}
			}
			expanded := ExpandGrant(f, "u", "c")
			if strings.Contains(expanded, "{") {
				v.Errorf(key, "%s %q: unknown placeholder (use {username}, %%u, {clientid} or %%c)", key, f)
				continue
			}
			if err := topic.ValidFilter(expanded); err != nil {
				v.Errorf(key, "%s %q is not a valid topic filter: %v", key, f, err)
			}
		}
	}
}

// checkAddress checks a host:port listen address (host may be empty for all interfaces).
func checkAddress(addr string) error {
	if addr == "" {
		return fmt.Errorf("address is required, e.g. \":1883\" or \"127.0.0.1:1883\"")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. \":1883\" or \"127.0.0.1:1883\")", addr)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("%q: host must be an IP address, localhost or empty", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	return nil
}
