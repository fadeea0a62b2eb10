package config

// Buffer configures the durable disk buffer.
type Buffer struct{}

func defaultBuffer() Buffer { return Buffer{} }

func (c *Config) validateBuffer(v *validator) {}
