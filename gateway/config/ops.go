package config

// Ops configures how the daemon reports on itself.
type Ops struct {
	Log Log `yaml:"log"`
}

// Log configures log/slog output on stderr.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

func defaultOps() Ops { return Ops{Log: Log{Level: "info", Format: "text"}} }

func (c *Config) validateOps(v *validator) {
	if !oneOf(c.Ops.Log.Level, "debug", "info", "warn", "error") {
		v.at("ops.log.level", "ops.log.level %q: expected debug, info, warn or error", c.Ops.Log.Level)
	}
	if !oneOf(c.Ops.Log.Format, "text", "json") {
		v.at("ops.log.format", "ops.log.format %q: expected text or json", c.Ops.Log.Format)
	}
}
