package uplink

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/topic"
)

// Config is one entry of the config's uplinks list (SPEC §3, §5): what every uplink has —
// its name, its sink's type, what it forwards and how it batches, paces and retries. The
// keys of its sink (url, topic, path...) sit at the same level in the file; the sink
// declares them (SinkType.NewConfig) and Resolve decodes them into Sink.
type Config struct {
	Name string `yaml:"name"`
	// Type names the sink: mqtt, http, pubsub or file (those the binary has).
	Type string `yaml:"type"`
	// Forward lists the local topic filters whose records this uplink sends.
	Forward []string    `yaml:"forward"`
	Batch   BatchLimits `yaml:"batch"`
	// MaxRate caps the records/s sent from a backlog while fresh data flows; 0: no cap.
	MaxRate int `yaml:"max_rate"`
	// Timeout bounds one send: connecting plus the remote ack.
	Timeout conf.Duration `yaml:"timeout"`
	Backoff Backoff       `yaml:"backoff"`

	// Sink is the sink's own config (its defaults when the file sets none of its keys);
	// nil when the type is unknown.
	Sink SinkConfig `yaml:"-"`
	// Keys are the keys left to the sinks until Resolve takes them.
	Keys conf.Extra
}

// SetDefaults implements conf.Defaulter.
func (u *Config) SetDefaults() {
	u.Forward = []string{"#"}
	u.Batch = BatchLimits{MaxRecords: 500, MaxBytes: 256 << 10, Linger: conf.Duration(time.Second)}
	u.MaxRate = 5000
	u.Timeout = conf.Duration(30 * time.Second)
	u.Backoff = Backoff{Min: conf.Duration(500 * time.Millisecond), Max: conf.Duration(time.Minute)}
}

// MaxBatchBytes caps batch.max_bytes: a batch the upstream refuses for good is kept in the
// buffer's dead-letter log, whole in one entry when it fits in a store value
// (buffer.MaxValueSize, about 549 KiB with the store's 4 MiB memtables, less the entry's
// header; TestDeadLetterAtTheCap checks the margin).
const MaxBatchBytes = 512 << 10

// BatchLimits bound one uplink message.
type BatchLimits struct {
	MaxRecords int           `yaml:"max_records"`
	MaxBytes   conf.ByteSize `yaml:"max_bytes"`
	// Linger is how long a partial batch waits for more records.
	Linger conf.Duration `yaml:"linger"`
}

// Backoff bounds the wait between failed sends: exponential from Min, capped at Max, with
// full jitter.
type Backoff struct {
	Min conf.Duration `yaml:"min"`
	Max conf.Duration `yaml:"max"`
}

// TLS holds the client certificates of a TLS uplink (mqtt, http). All files are PEM.
type TLS struct {
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

// Validate checks the pairing of the client certificate; r is at the uplink.
func (t *TLS) Validate(r *conf.Reporter) {
	if t != nil && (t.CertFile == "") != (t.KeyFile == "") {
		r.Errorf("tls", "%s.tls: cert_file and key_file go together (mutual TLS)", r.Path(""))
	}
}

// SinkType is a sink as a registry knows it (cmd/edgegate builds the registry of what the
// binary contains; nothing registers itself). Name is the uplink's type: value.
type SinkType struct {
	Name string
	// NewConfig returns the sink's config with its defaults.
	NewConfig func() SinkConfig
	// New builds a sink for a validated uplink, without dialing.
	New func(cfg *Config, gateway string, log *slog.Logger) (Sink, error)
}

// SinkConfig is a sink's part of an uplink's config: its keys, at the uplink's level.
type SinkConfig interface {
	// Validate checks the sink's keys, reporting at the uplink.
	Validate(u *Config, r *conf.Reporter)
}

// Encoder is implemented by sink configs that send the batch payload as one message and
// may have it compressed (compression: gzip).
type Encoder interface {
	// PayloadEncoding is "" or "gzip" (HTTP's Content-Encoding name).
	PayloadEncoding() string
}

// Resolver is implemented by sink configs with defaults that depend on the gateway (a
// client id).
type Resolver interface {
	Resolve(gateway, uplink string)
}

// FindSink returns the named type of types, or nil.
func FindSink(types []SinkType, name string) *SinkType {
	for i := range types {
		if types[i].Name == name {
			return &types[i]
		}
	}
	return nil
}

// SinkNames lists the types' names, in order.
func SinkNames(types []SinkType) []string {
	out := make([]string, len(types))
	for i, t := range types {
		out[i] = t.Name
	}
	return out
}

// Resolve decodes the sink's keys (the file's over the sink's defaults), reports the keys
// of other sinks ("not used by type") and keys no sink takes (unless the uplink's type is
// one the build omitted: Validate says so), and fills the defaults that depend on the
// gateway. r is positioned at the uplink; it runs after the first decoding pass.
func (u *Config) Resolve(doc *conf.Doc, r *conf.Reporter, types []SinkType, omitted map[string]string, gateway string) {
	t := FindSink(types, u.Type)
	if t != nil {
		u.Sink = t.NewConfig()
	}
	for _, k := range u.Keys {
		var owners []string
		var first *SinkType
		for i := range types {
			if slices.Contains(conf.Keys(types[i].NewConfig()), k.Key.Value) {
				owners = append(owners, types[i].Name)
				if first == nil {
					first = &types[i]
				}
			}
		}
		switch {
		case first == nil && omitted[u.Type] != "":
			// The omitted sink's key, most likely.
		case first == nil:
			known := conf.Keys(u)
			for _, st := range types {
				known = append(known, conf.Keys(st.NewConfig())...)
			}
			doc.UnknownKey(k.Key, r.Path(""), known)
		case t != nil && slices.Contains(owners, t.Name):
			doc.DecodeKey(k, u.Sink, r.Path(""))
		default:
			// Decoded all the same, so a wrong type there is reported too.
			doc.DecodeKey(k, first.NewConfig(), r.Path(""))
			if t != nil {
				r.Errorf(k.Key.Value, "%s: not used by type %s (only by %s)", r.Path(k.Key.Value), u.Type, strings.Join(owners, ", "))
			}
		}
	}
	u.Keys = nil
	if rv, ok := u.Sink.(Resolver); ok {
		rv.Resolve(gateway, u.Name)
	}
}

// Validate checks the uplink against the sinks of types, each problem with its position.
// omitted names the types this build leaves out, with why. The uniqueness of names is the
// caller's (it sees the whole list).
func (u *Config) Validate(r *conf.Reporter, types []SinkType, omitted map[string]string) {
	p := r.Path("")
	switch {
	case u.Sink != nil:
		u.Sink.Validate(u, r)
	case omitted[u.Type] != "":
		r.Errorf("type", "%s.type %q: not built into this binary (%s); expected one of %s", p, u.Type, omitted[u.Type], strings.Join(SinkNames(types), ", "))
	default:
		r.Errorf("type", "%s.type %q: expected one of %s", p, u.Type, strings.Join(SinkNames(types), ", "))
	}
	if len(u.Forward) == 0 {
		r.Errorf("forward", "%s.forward: list at least one local topic filter (\"#\" for everything)", p)
	}
	for j, f := range u.Forward {
		if err := topic.ValidFilter(f); err != nil {
			r.Errorf(fmt.Sprintf("forward[%d]", j), "%s.forward[%d]: %v", p, j, err)
		}
	}
	b := u.Batch
	if b.MaxRecords < 1 || b.MaxRecords > 10000 {
		r.Errorf("batch.max_records", "%s.batch.max_records %d: expected 1 to 10000", p, b.MaxRecords)
	}
	if b.MaxBytes < 1024 || b.MaxBytes > MaxBatchBytes {
		r.Errorf("batch.max_bytes", "%s.batch.max_bytes %s: expected 1KiB to %s (a refused batch is kept whole in one buffer entry)", p, b.MaxBytes, conf.ByteSize(MaxBatchBytes))
	}
	if b.Linger.D() > time.Hour {
		r.Errorf("batch.linger", "%s.batch.linger %s: at most 1h", p, b.Linger)
	}
	if u.MaxRate < 0 {
		r.Errorf("max_rate", "%s.max_rate %d: expected records/s ≥ 0 (0: no cap)", p, u.MaxRate)
	} else if u.MaxRate > 0 && u.MaxRate < u.Batch.MaxRecords/60 {
		r.Errorf("max_rate", "%s.max_rate %d: one batch of %d records would wait over a minute; raise max_rate or lower batch.max_records", p, u.MaxRate, u.Batch.MaxRecords)
	}
	if u.Timeout.D() < 100*time.Millisecond || u.Timeout.D() > 10*time.Minute {
		r.Errorf("timeout", "%s.timeout %s: expected 100ms to 10m", p, u.Timeout)
	}
	if u.Backoff.Min.D() < time.Millisecond {
		r.Errorf("backoff.min", "%s.backoff.min %s: expected at least 1ms", p, u.Backoff.Min)
	}
	if u.Backoff.Max.D() < u.Backoff.Min.D() || u.Backoff.Max.D() > time.Hour {
		r.Errorf("backoff.max", "%s.backoff.max %s: expected between backoff.min (%s) and 1h", p, u.Backoff.Max, u.Backoff.Min)
	}
}

// ValidateCompression checks a sink's compression key.
func ValidateCompression(r *conf.Reporter, compression string) {
	if compression != "none" && compression != "gzip" {
		r.Errorf("compression", "%s.compression %q: expected none or gzip", r.Path(""), compression)
	}
}

// Expand replaces {gateway} and {kind} in an uplink's URL or topic.
func Expand(s, gateway, kind string) string {
	return strings.NewReplacer("{gateway}", gateway, "{kind}", kind).Replace(s)
}

// CheckPlaceholders reports a placeholder other than {gateway} and {kind} in s.
func CheckPlaceholders(s string) error {
	rest := Expand(s, "", "")
	if i := strings.IndexByte(rest, '{'); i >= 0 {
		j := strings.IndexByte(rest[i:], '}')
		if j > 0 {
			return fmt.Errorf("unknown placeholder %s (known: {gateway}, {kind})", rest[i:i+j+1])
		}
		return fmt.Errorf("unclosed '{'")
	}
	return nil
}

// File is a file a sink reads at start, named by its config: `edgegate validate` reads it
// on the machine, as run would (internal/preflight).
type File struct {
	Key  string // its key below the uplink's: password_file, tls.ca_file
	Path string
	Kind FileKind
}

// FileKind says what a File must hold.
type FileKind uint8

// The kinds of File.
const (
	FileSecret         FileKind = iota // a password or token: not empty
	FileCA                             // PEM certificates
	FileCert                           // a PEM certificate, paired with the FileKey of the same sink
	FileKey                            // its PEM private key
	FileServiceAccount                 // a Google service account key (JSON)
)

// FileNamer is a SinkConfig that names the files its sink reads.
type FileNamer interface {
	Files() []File
}

// Files lists the files of t (nil: none), keyed under tls.
func (t *TLS) Files() []File {
	if t == nil {
		return nil
	}
	var fs []File
	for _, f := range []File{{"tls.ca_file", t.CAFile, FileCA}, {"tls.cert_file", t.CertFile, FileCert}, {"tls.key_file", t.KeyFile, FileKey}} {
		if f.Path != "" {
			fs = append(fs, f)
		}
	}
	return fs
}

// NewSinkType builds the SinkType of a sink whose config is C (its defaults set through
// conf.Defaulter when it has some) and whose constructor is newSink; a failed constructor
// gives a nil Sink, never a typed nil.
func NewSinkType[C any, PC interface {
	*C
	SinkConfig
}, S Sink](name string, newSink func(cfg *Config, gateway string, log *slog.Logger) (S, error)) SinkType {
	return SinkType{
		Name: name,
		NewConfig: func() SinkConfig {
			c := PC(new(C))
			if d, ok := any(c).(conf.Defaulter); ok {
				d.SetDefaults()
			}
			return c
		},
		New: func(cfg *Config, gateway string, log *slog.Logger) (Sink, error) {
			s, err := newSink(cfg, gateway, log)
			if err != nil {
				return nil, err
			}
			return s, nil
		},
	}
}
