package config

import (
	"fmt"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
)

// Buffer configures the durable disk buffer (SPEC §5): when an acknowledged message is
// safe, how much disk the buffer may use, and what happens when it is full.
type Buffer struct {
	// Sync is when appends are fsynced: always (before the PUBACK; the default), or an
	// interval such as 10ms (the PUBACK leaves once the write is in the write-ahead log; a
	// power cut may lose the last interval, a crash of the process loses nothing).
	Sync SyncPolicy `yaml:"sync"`
	// MaxBytes bounds the disk space of the buffer's directory; 0 leaves only ReserveFree.
	MaxBytes conf.ByteSize `yaml:"max_bytes"`
	// ReserveFree is free space always left on the file system for the OS.
	ReserveFree conf.ByteSize `yaml:"reserve_free"`
	// OnFull is drop_oldest or reject.
	OnFull string `yaml:"on_full"`
	// Retention deletes records older than this, delivered or not; 0 keeps them until
	// delivered or dropped for room.
	Retention conf.Duration `yaml:"retention"`
}

// SyncPolicy is "always" (0) or an fsync interval.
type SyncPolicy time.Duration

// Interval is the fsync period; 0 means always.
func (p SyncPolicy) Interval() time.Duration { return time.Duration(p) }

func (p SyncPolicy) String() string {
	if p == 0 {
		return "always"
	}
	return time.Duration(p).String()
}

// DecodeScalar implements conf.ScalarDecoder.
func (p *SyncPolicy) DecodeScalar(value string) error {
	if value == "always" {
		*p = 0
		return nil
	}
	d, err := time.ParseDuration(value)
	if err != nil || d <= 0 {
		return fmt.Errorf("expected always or an fsync interval such as 10ms, found %q", value)
	}
	*p = SyncPolicy(d)
	return nil
}

// minBufferBytes mirrors buffer.MinMaxBytes (config does not import the store; a test
// checks they agree).
const minBufferBytes = 128 << 20

func defaultBuffer() Buffer {
	return Buffer{MaxBytes: 512 << 20, ReserveFree: 64 << 20, OnFull: "drop_oldest"}
}

func (c *Config) validateBuffer(v *conf.Reporter) {
	b := c.Buffer
	if b.Sync.Interval() > time.Second {
		v.Errorf("buffer.sync", "buffer.sync %s: at most 1s (a power cut loses up to one interval of acknowledged data)", b.Sync)
	}
	switch {
	case b.MaxBytes == 0 && b.ReserveFree == 0:
		v.Errorf("buffer.max_bytes", "buffer: max_bytes 0 and reserve_free 0 leave the buffer unbounded: set max_bytes (e.g. 512MiB) or reserve_free")
	case b.MaxBytes != 0 && b.MaxBytes < minBufferBytes:
		v.Errorf("buffer.max_bytes", "buffer.max_bytes %s: at least %s (Badger's own working space takes part of it), or 0 for no byte budget", b.MaxBytes, conf.ByteSize(minBufferBytes))
	}
	if !oneOf(b.OnFull, "drop_oldest", "reject") {
		v.Errorf("buffer.on_full", "buffer.on_full %q: expected drop_oldest or reject", b.OnFull)
	}
	if r := b.Retention.D(); r != 0 && r < time.Minute {
		v.Errorf("buffer.retention", "buffer.retention %s: at least 1m (retention is applied to the minute), or 0 to keep records until delivered", b.Retention)
	}
}
