package mqttsink

import (
	"net/url"
	"slices"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/topic"
	"github.com/edgegate/edgegate/uplink"
)

// Config is the mqtt sink's part of an uplink.
type Config struct {
	// URL of the broker: tcp://, mqtt://, or tls://, mqtts:// for TLS.
	URL string `yaml:"url"`
	// Topic is the MQTT topic template; {gateway} and {kind} are replaced.
	Topic string `yaml:"topic"`
	// ClientID; default "<gateway.id>-<name>".
	ClientID string `yaml:"client_id"`
	// QoS: 1 (the batch is committed after its PUBACK).
	QoS int `yaml:"qos"`
	// Username and PasswordFile authenticate to the upstream broker.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// TLS configures certificates for tls:// URLs.
	TLS *uplink.TLS `yaml:"tls"`
	// Compression of the batch payload: none or gzip.
	Compression string `yaml:"compression"`
}

// SetDefaults implements conf.Defaulter.
func (c *Config) SetDefaults() {
	c.Topic = "edgegate/{gateway}/{kind}"
	c.QoS = 1
	c.Compression = "none"
}

// Resolve implements uplink.Resolver: the client id defaults to "<gateway>-<uplink>".
func (c *Config) Resolve(gateway, name string) {
	if c.ClientID == "" {
		c.ClientID = gateway + "-" + name
	}
}

// PayloadEncoding implements uplink.Encoder.
func (c *Config) PayloadEncoding() string {
	if c.Compression == "gzip" {
		return "gzip"
	}
	return ""
}

// Type is the mqtt sink.
func Type() uplink.SinkType { return uplink.NewSinkType[Config]("mqtt", New) }

// Validate checks the broker's URL, the topic, the QoS and the credentials.
func (c *Config) Validate(_ *uplink.Config, r *conf.Reporter) {
	p := r.Path("")
	if c.URL == "" {
		r.Errorf("url", "%s: an mqtt uplink needs a url, e.g. url: tcp://broker.example.com:1883", p)
	} else if pu, err := url.Parse(c.URL); err != nil || !slices.Contains([]string{"tcp", "mqtt", "tls", "mqtts", "ssl"}, pu.Scheme) || pu.Host == "" || pu.Port() == "" {
		r.Errorf("url", "%s.url %q: expected tcp://HOST:PORT, mqtt://HOST:PORT, or tls://HOST:PORT / mqtts://HOST:PORT for TLS", p, c.URL)
	} else if c.TLS != nil && (pu.Scheme == "tcp" || pu.Scheme == "mqtt") {
		r.Errorf("tls", "%s.tls: the url %q is plain TCP; use tls://HOST:PORT or mqtts://HOST:PORT", p, c.URL)
	}
	if t, err := topic.ParseTemplate(c.Topic); err != nil {
		r.Errorf("topic", "%s.topic: %v", p, err)
	} else {
		for _, n := range t.Names() {
			if n != "gateway" && n != "kind" {
				r.Errorf("topic", "%s.topic: unknown placeholder {%s} (known: {gateway}, {kind})", p, n)
			}
		}
		if err := topic.ValidName(t.Expand(func(string) string { return "x" })); err != nil {
			r.Errorf("topic", "%s.topic: %v", p, err)
		}
	}
	if c.QoS != 1 {
		r.Errorf("qos", "%s.qos %d: only 1 is supported (a batch is committed after its PUBACK)", p, c.QoS)
	}
	if c.PasswordFile != "" && c.Username == "" {
		r.Errorf("password_file", "%s: password_file needs a username", p)
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
	return fs
}
