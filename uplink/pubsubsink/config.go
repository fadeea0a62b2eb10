package pubsubsink

import (
	"strings"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/uplink"
)

// Config is the pubsub sink's part of an uplink.
type Config struct {
	// Topic is the Pub/Sub topic id; {gateway} and {kind} are replaced. Required.
	Topic string `yaml:"topic"`
	// Project, CredentialsFile and Endpoint say where and as whom to publish.
	Project         string `yaml:"project"`
	CredentialsFile string `yaml:"credentials_file"`
	Endpoint        string `yaml:"endpoint"`
	// Ordering is none or series (one Pub/Sub ordering key per series).
	Ordering string `yaml:"ordering"`
}

// SetDefaults implements conf.Defaulter.
func (c *Config) SetDefaults() { c.Ordering = "none" }

// Type is the pubsub sink.
func Type() uplink.SinkType { return uplink.NewSinkType[Config]("pubsub", New) }

// Validate checks the project, the topic id and the ordering.
func (c *Config) Validate(_ *uplink.Config, r *conf.Reporter) {
	p := r.Path("")
	if c.Project == "" {
		r.Errorf("project", "%s: a pubsub uplink needs a project, e.g. project: my-gcp-project", p)
	}
	if !r.Has("topic") {
		r.Errorf("topic", "%s: a pubsub uplink needs a topic: the Pub/Sub topic id, e.g. topic: edgegate-{kind}", p)
	} else if err := uplink.CheckPlaceholders(c.Topic); err != nil {
		r.Errorf("topic", "%s.topic: %v", p, err)
	} else if id := uplink.Expand(c.Topic, "gw", "aggregates"); !topicIDOK(id) {
		r.Errorf("topic", "%s.topic %q: a Pub/Sub topic id is 3 to 255 of A-Z a-z 0-9 - _ . ~ + %%, starting with a letter, not with \"goog\"", p, c.Topic)
	}
	if c.Ordering != "none" && c.Ordering != "series" {
		r.Errorf("ordering", "%s.ordering %q: expected none or series", p, c.Ordering)
	}
}

func topicIDOK(id string) bool {
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

// Files implements uplink.FileNamer.
func (c *Config) Files() []uplink.File {
	if c.CredentialsFile == "" {
		return nil
	}
	return []uplink.File{{Key: "credentials_file", Path: c.CredentialsFile, Kind: uplink.FileServiceAccount}}
}
