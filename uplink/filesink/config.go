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
	return uplink.SinkType{
		Name:      "file",
		NewConfig: func() uplink.SinkConfig { return &Config{} },
		New: func(cfg *uplink.Config, _ string, _ *slog.Logger) (uplink.Sink, error) {
			s, err := New(cfg)
			if err != nil {
				return nil, err
			}
			return s, nil
		},
	}
}

// Validate checks that there is a path.
func (c *Config) Validate(_ *uplink.Config, r *conf.Reporter) {
	if c.Path == "" {
		r.Errorf("path", "%s: a file uplink needs a path, e.g. path: ./data/uplink.jsonl", r.Path(""))
	}
}
