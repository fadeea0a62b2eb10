package config

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/edgegate/edgegate/internal/topic"
)

// Uplink forwards buffered records upstream (SPEC §3, §5).
type Uplink struct {
	Name string `yaml:"name"`
	// Type is mqtt, http, pubsub or file.
	Type string `yaml:"type"`
	// URL of the upstream: the broker for mqtt (tcp://, mqtt://, tls://, mqtts://), the
	// collector's endpoint for http (http:// or https://; {gateway} and {kind} are replaced).
	URL string `yaml:"url"`
	// Topic is the MQTT topic template (mqtt) or the Pub/Sub topic id (pubsub); {gateway}
	// and {kind} are replaced.
	Topic string `yaml:"topic"`
	// ClientID for mqtt; default "<gateway.id>-<name>".
	ClientID string `yaml:"client_id"`
	// QoS for mqtt: 1 (the batch is committed after its PUBACK).
	QoS int `yaml:"qos"`
	// Username and PasswordFile authenticate to the upstream broker (mqtt) or with HTTP
	// basic auth (http).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// BearerTokenFile holds an HTTP bearer token (http), re-read when it changes.
	BearerTokenFile string `yaml:"bearer_token_file"`
	// Headers are added to every HTTP request (http).
	Headers map[string]string `yaml:"headers"`
	// TLS configures certificates for mqtt (tls:// URLs) and http (https:// URLs).
	TLS *UplinkTLS `yaml:"tls"`
	// Project, CredentialsFile, Endpoint and Ordering configure Google Cloud Pub/Sub.
	Project         string `yaml:"project"`
	CredentialsFile string `yaml:"credentials_file"`
	Endpoint        string `yaml:"endpoint"`
	// Ordering is none or series (one Pub/Sub ordering key per series).
	Ordering string `yaml:"ordering"`
	// Path of the JSON Lines file (file).
	Path string `yaml:"path"`
	// Forward lists the local topic filters whose records this uplink sends.
	Forward []string `yaml:"forward"`
	Batch   Batch    `yaml:"batch"`
	// Compression of the batch payload: none or gzip (mqtt, http).
	Compression string `yaml:"compression"`
	// MaxRate caps the records/s sent from a backlog while fresh data flows; 0: no cap.
	MaxRate int `yaml:"max_rate"`
	// Timeout bounds one send: connecting plus the remote ack.
	Timeout Duration `yaml:"timeout"`
	Backoff Backoff  `yaml:"backoff"`
}

// MaxBatchBytes caps batch.max_bytes: a batch the upstream refuses for good is kept in the
// buffer's dead-letter log, whole in one entry when it fits in a store value
// (buffer.MaxValueSize, about 549 KiB with the store's 4 MiB memtables, less the entry's
// header; uplink's TestDeadLetterAtTheCap checks the margin).
const MaxBatchBytes = 512 << 10

// Batch bounds one uplink message.
type Batch struct {
	MaxRecords int      `yaml:"max_records"`
	MaxBytes   ByteSize `yaml:"max_bytes"`
	// Linger is how long a partial batch waits for more records.
	Linger Duration `yaml:"linger"`
}

// UplinkTLS holds the certificates of a TLS uplink. All files are PEM.
type UplinkTLS struct {
	// CAFile verifies the server; default: the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate (mutual TLS, e.g. AWS IoT Core).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the server certificate.
	ServerName string `yaml:"server_name"`
	// ALPN protocols to offer (AWS IoT Core on port 443 wants x-amzn-mqtt-ca).
	ALPN []string `yaml:"alpn"`
}

// Backoff bounds the wait between failed sends: exponential from Min, capped at Max, with
// full jitter.
type Backoff struct {
	Min Duration `yaml:"min"`
	Max Duration `yaml:"max"`
}

func (u *Uplink) setDefaults() {
	u.Topic = "edgegate/{gateway}/{kind}"
	u.QoS = 1
	u.Forward = []string{"#"}
	u.Batch = Batch{MaxRecords: 500, MaxBytes: 256 << 10, Linger: Duration(time.Second)}
	u.Compression = "none"
	u.Ordering = "none"
	u.MaxRate = 5000
	u.Timeout = Duration(30 * time.Second)
	u.Backoff = Backoff{Min: Duration(500 * time.Millisecond), Max: Duration(time.Minute)}
}

// UplinkTypes lists the uplink types this build knows.
var UplinkTypes = []string{"mqtt", "http", "pubsub", "file"}

// uplinkKeys says which uplink types use a type-specific key; a key set for another type
// is an error, so a misplaced setting never goes silently unused.
var uplinkKeys = map[string][]string{
	"url":               {"mqtt", "http"},
	"topic":             {"mqtt", "pubsub"},
	"client_id":         {"mqtt"},
	"qos":               {"mqtt"},
	"username":          {"mqtt", "http"},
	"password_file":     {"mqtt", "http"},
	"bearer_token_file": {"http"},
	"headers":           {"http"},
	"tls":               {"mqtt", "http"},
	"project":           {"pubsub"},
	"credentials_file":  {"pubsub"},
	"endpoint":          {"pubsub"},
	"ordering":          {"pubsub"},
	"path":              {"file"},
	"compression":       {"mqtt", "http"},
}

func (c *Config) validateUplinks(v *validator) {
	names := map[string]int{}
	for i, u := range c.Uplinks {
		p := fmt.Sprintf("uplinks[%d]", i)
		v.uniqueName(p, u.Name, i, names)
		switch u.Type {
		case "mqtt":
			c.validateMQTTUplink(v, p, &u)
		case "http":
			c.validateHTTPUplink(v, p, &u)
		case "pubsub":
			c.validatePubSubUplink(v, p, &u)
		case "file":
			if u.Path == "" {
				v.at(p+".path", "%s: a file uplink needs a path, e.g. path: ./data/uplink.jsonl", p)
			}
		default:
			v.at(p+".type", "%s.type %q: expected one of %s", p, u.Type, strings.Join(UplinkTypes, ", "))
		}
		if oneOf(u.Type, UplinkTypes...) {
			for _, k := range uplinkKeyNames() {
				if c.Has(p+"."+k) && !oneOf(u.Type, uplinkKeys[k]...) {
					v.at(p+"."+k, "%s.%s: not used by type %s (only by %s)", p, k, u.Type, strings.Join(uplinkKeys[k], ", "))
				}
			}
		}
		if len(u.Forward) == 0 {
			v.at(p+".forward", "%s.forward: list at least one local topic filter (\"#\" for everything)", p)
		}
		for j, f := range u.Forward {
			if err := topic.ValidFilter(f); err != nil {
				v.at(fmt.Sprintf("%s.forward[%d]", p, j), "%s.forward[%d]: %v", p, j, err)
			}
		}
		b := u.Batch
		if b.MaxRecords < 1 || b.MaxRecords > 10000 {
			v.at(p+".batch.max_records", "%s.batch.max_records %d: expected 1 to 10000", p, b.MaxRecords)
		}
		if b.MaxBytes < 1024 || b.MaxBytes > MaxBatchBytes {
			v.at(p+".batch.max_bytes", "%s.batch.max_bytes %s: expected 1KiB to %s (a refused batch is kept whole in one buffer entry)", p, b.MaxBytes, ByteSize(MaxBatchBytes))
		}
		if b.Linger.D() > time.Hour {
			v.at(p+".batch.linger", "%s.batch.linger %s: at most 1h", p, b.Linger)
		}
		if !oneOf(u.Compression, "none", "gzip") {
			v.at(p+".compression", "%s.compression %q: expected none or gzip", p, u.Compression)
		}
		if u.MaxRate < 0 {
			v.at(p+".max_rate", "%s.max_rate %d: expected records/s ≥ 0 (0: no cap)", p, u.MaxRate)
		} else if u.MaxRate > 0 && u.MaxRate < u.Batch.MaxRecords/60 {
			v.at(p+".max_rate", "%s.max_rate %d: one batch of %d records would wait over a minute; raise max_rate or lower batch.max_records", p, u.MaxRate, u.Batch.MaxRecords)
		}
		if u.Timeout.D() < 100*time.Millisecond || u.Timeout.D() > 10*time.Minute {
			v.at(p+".timeout", "%s.timeout %s: expected 100ms to 10m", p, u.Timeout)
		}
		if u.Backoff.Min.D() < time.Millisecond {
			v.at(p+".backoff.min", "%s.backoff.min %s: expected at least 1ms", p, u.Backoff.Min)
		}
		if u.Backoff.Max.D() < u.Backoff.Min.D() || u.Backoff.Max.D() > time.Hour {
			v.at(p+".backoff.max", "%s.backoff.max %s: expected between backoff.min (%s) and 1h", p, u.Backoff.Max, u.Backoff.Min)
		}
		if u.TLS != nil {
			if (u.TLS.CertFile == "") != (u.TLS.KeyFile == "") {
				v.at(p+".tls", "%s.tls: cert_file and key_file go together (mutual TLS)", p)
			}
		}
	}
}

func (c *Config) validateMQTTUplink(v *validator, p string, u *Uplink) {
	if u.URL == "" {
		v.at(p+".url", "%s: an mqtt uplink needs a url, e.g. url: tcp://broker.example.com:1883", p)
	} else if pu, err := url.Parse(u.URL); err != nil || !oneOf(pu.Scheme, "tcp", "mqtt", "tls", "mqtts", "ssl") || pu.Host == "" || pu.Port() == "" {
		v.at(p+".url", "%s.url %q: expected tcp://HOST:PORT, mqtt://HOST:PORT, or tls://HOST:PORT / mqtts://HOST:PORT for TLS", p, u.URL)
	} else if u.TLS != nil && oneOf(pu.Scheme, "tcp", "mqtt") {
		v.at(p+".tls", "%s.tls: the url %q is plain TCP; use tls://HOST:PORT or mqtts://HOST:PORT", p, u.URL)
	}
	if t, err := topic.ParseTemplate(u.Topic); err != nil {
		v.at(p+".topic", "%s.topic: %v", p, err)
	} else {
		for _, n := range t.Names() {
			if n != "gateway" && n != "kind" {
				v.at(p+".topic", "%s.topic: unknown placeholder {%s} (known: {gateway}, {kind})", p, n)
			}
		}
		if err := topic.ValidName(t.Expand(func(string) string { return "x" })); err != nil {
			v.at(p+".topic", "%s.topic: %v", p, err)
		}
	}
	if u.QoS != 1 {
		v.at(p+".qos", "%s.qos %d: only 1 is supported (a batch is committed after its PUBACK)", p, u.QoS)
	}
	if u.PasswordFile != "" && u.Username == "" {
		v.at(p+".password_file", "%s: password_file needs a username", p)
	}
}

func (c *Config) validateHTTPUplink(v *validator, p string, u *Uplink) {
	if u.URL == "" {
		v.at(p+".url", "%s: an http uplink needs a url, e.g. url: https://collector.example.com/ingest/{gateway}", p)
	} else {
		if err := checkPlaceholders(u.URL); err != nil {
			v.at(p+".url", "%s.url: %v", p, err)
		}
		pu, err := url.Parse(ExpandUplink(u.URL, "gw", "records"))
		if err != nil || !oneOf(pu.Scheme, "http", "https") || pu.Host == "" {
			v.at(p+".url", "%s.url %q: expected http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH", p, u.URL)
		} else if u.TLS != nil && pu.Scheme != "https" {
			v.at(p+".tls", "%s.tls: the url %q is plain HTTP; use https://", p, u.URL)
		}
	}
	if u.PasswordFile != "" && u.Username == "" {
		v.at(p+".password_file", "%s: password_file needs a username (HTTP basic auth)", p)
	}
	if u.Username != "" && u.PasswordFile == "" {
		v.at(p+".username", "%s: username needs a password_file (HTTP basic auth)", p)
	}
	if u.BearerTokenFile != "" && u.Username != "" {
		v.at(p+".bearer_token_file", "%s: use either bearer_token_file or username/password_file, not both", p)
	}
	for k := range u.Headers {
		switch strings.ToLower(k) {
		case "content-type", "content-encoding", "content-length", "authorization", "idempotency-key":
			v.at(p+".headers", "%s.headers: %q is set by edgegate itself", p, k)
		}
	}
}

func (c *Config) validatePubSubUplink(v *validator, p string, u *Uplink) {
	if u.Project == "" {
		v.at(p+".project", "%s: a pubsub uplink needs a project, e.g. project: my-gcp-project", p)
	}
	if !c.Has(p + ".topic") {
		v.at(p+".topic", "%s: a pubsub uplink needs a topic: the Pub/Sub topic id, e.g. topic: edgegate-{kind}", p)
	} else if err := checkPlaceholders(u.Topic); err != nil {
		v.at(p+".topic", "%s.topic: %v", p, err)
	} else if id := ExpandUplink(u.Topic, "gw", "aggregates"); !pubsubTopicOK(id) {
		v.at(p+".topic", "%s.topic %q: a Pub/Sub topic id is 3 to 255 of A-Z a-z 0-9 - _ . ~ + %%, starting with a letter, not with \"goog\"", p, u.Topic)
	}
	if !oneOf(u.Ordering, "none", "series") {
		v.at(p+".ordering", "%s.ordering %q: expected none or series", p, u.Ordering)
	}
}

// ExpandUplink replaces {gateway} and {kind} in an uplink's URL or topic.
func ExpandUplink(s, gateway, kind string) string {
	return strings.NewReplacer("{gateway}", gateway, "{kind}", kind).Replace(s)
}

func checkPlaceholders(s string) error {
	rest := ExpandUplink(s, "", "")
	if i := strings.IndexByte(rest, '{'); i >= 0 {
		j := strings.IndexByte(rest[i:], '}')
		if j > 0 {
			return fmt.Errorf("unknown placeholder %s (known: {gateway}, {kind})", rest[i:i+j+1])
		}
		return fmt.Errorf("unclosed '{'")
	}
	return nil
}

func pubsubTopicOK(id string) bool {
	if len(id) < 3 || len(id) > 255 || strings.HasPrefix(id, "goog") {
		return false
	}
	if c := id[0]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.~+%", c) >= 0) {
			return false
		}
	}
	return true
}

func uplinkKeyNames() []string {
	ks := make([]string, 0, len(uplinkKeys))
	for k := range uplinkKeys {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
