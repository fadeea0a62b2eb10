package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/edgegate/edgegate/gateway/topic"
)

// Uplink forwards buffered records upstream (SPEC §3, §5).
type Uplink struct {
	Name string `yaml:"name"`
	// Type is mqtt or file.
	Type string `yaml:"type"`
	// URL of the upstream broker (mqtt): tcp://host:1883 or mqtt://host:1883.
	URL string `yaml:"url"`
	// Topic is the MQTT topic template; {gateway} and {kind} are replaced.
	Topic string `yaml:"topic"`
	// ClientID for mqtt; default "<gateway.id>-<name>".
	ClientID string `yaml:"client_id"`
	// QoS for mqtt: 1 (the batch is committed after its PUBACK).
	QoS int `yaml:"qos"`
	// Username and PasswordFile authenticate to the upstream broker (mqtt).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// Path of the JSON Lines file (file).
	Path string `yaml:"path"`
	// Forward lists the local topic filters whose records this uplink sends.
	Forward []string `yaml:"forward"`
	Batch   Batch    `yaml:"batch"`
}

// Batch bounds one uplink message.
type Batch struct {
	MaxRecords int      `yaml:"max_records"`
	MaxBytes   ByteSize `yaml:"max_bytes"`
	// Linger is how long a partial batch waits for more records.
	Linger Duration `yaml:"linger"`
}

func (u *Uplink) setDefaults() {
	u.Topic = "edgegate/{gateway}/{kind}"
	u.QoS = 1
	u.Forward = []string{"#"}
	u.Batch = Batch{MaxRecords: 500, MaxBytes: 256 << 10, Linger: Duration(time.Second)}
}

// UplinkTypes lists the uplink types this build knows.
var UplinkTypes = []string{"mqtt", "file"}

func (c *Config) validateUplinks(v *validator) {
	names := map[string]int{}
	for i, u := range c.Uplinks {
		p := fmt.Sprintf("uplinks[%d]", i)
		if !nameOK(u.Name) {
			v.at(p+".name", "%s.name %q: use 1 to 64 letters, digits, '.', '_' or '-'", p, u.Name)
		} else if j, dup := names[u.Name]; dup {
			v.at(p+".name", "%s.name %q is also the name of uplinks[%d]", p, u.Name, j)
		}
		names[u.Name] = i
		switch u.Type {
		case "mqtt":
			c.validateMQTTUplink(v, p, &u)
		case "file":
			if u.Path == "" {
				v.at(p+".path", "%s: a file uplink needs a path, e.g. path: ./data/uplink.jsonl", p)
			}
			for _, k := range []string{"url", "username", "password_file", "client_id"} {
				if c.Has(p + "." + k) {
					v.at(p+"."+k, "%s.%s: not used by a file uplink", p, k)
				}
			}
		default:
			v.at(p+".type", "%s.type %q: expected one of %s", p, u.Type, strings.Join(UplinkTypes, ", "))
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
		if b.MaxBytes < 1024 || b.MaxBytes > 16<<20 {
			v.at(p+".batch.max_bytes", "%s.batch.max_bytes %s: expected 1KiB to 16MiB", p, b.MaxBytes)
		}
		if b.Linger.D() > time.Hour {
			v.at(p+".batch.linger", "%s.batch.linger %s: at most 1h", p, b.Linger)
		}
	}
}

func (c *Config) validateMQTTUplink(v *validator, p string, u *Uplink) {
	if u.URL == "" {
		v.at(p+".url", "%s: an mqtt uplink needs a url, e.g. url: tcp://broker.example.com:1883", p)
	} else if pu, err := url.Parse(u.URL); err != nil || !oneOf(pu.Scheme, "tcp", "mqtt") || pu.Host == "" || pu.Port() == "" {
		v.at(p+".url", "%s.url %q: expected tcp://HOST:PORT or mqtt://HOST:PORT", p, u.URL)
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
	if c.Has(p + ".path") {
		v.at(p+".path", "%s.path: not used by an mqtt uplink", p)
	}
}
