package filesink

import (
	"log/slog"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/uplink"
)

// Config is the file sink's part of an uplink.
type Config struct {
	// Path of the JSON Lines file.
	Path string `yaml:"path"`
}

// Type is the file sink.
func Type() uplink.SinkType {
	return uplink.NewSinkType[Config]("file", func(cfg *uplink.Config, _ string, _ *slog.Logger) (*Sink, error) { return New(cfg) })
}

// Validate checks that there is a path.
func (c *Config) Validate(_ *uplink.Config, r *conf.Reporter) {
	if c.Path == "" {
		r.Errorf("path", "%s: a file uplink needs a path, e.g. path: ./data/uplink.jsonl", r.Path(""))
	}
}
