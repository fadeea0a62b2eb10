// Package filesink appends batches to a JSON Lines file, one batch per line, fsynced before
// Send returns: for local archiving and demos.
package filesink

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/edgegate/edgegate/uplink"
)

// Sink is a JSON Lines file.
type Sink struct {
	path string
	mu   sync.Mutex // guards f
	f    *os.File
}

var _ uplink.Sink = (*Sink)(nil)

// New builds the file sink of an uplink. The file opens on the first Send.
func New(cfg *uplink.Config) (*Sink, error) {
	c, ok := cfg.Sink.(*Config)
	if !ok {
		return nil, fmt.Errorf("uplink %q: not a file uplink", cfg.Name)
	}
	return &Sink{path: c.Path}, nil
}

// Send appends b's JSON and a newline, then fsyncs.
func (s *Sink) Send(ctx context.Context, b *uplink.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		if err := os.MkdirAll(filepath.Dir(s.path), 0o750); err != nil {
			return fmt.Errorf("file uplink: %w", err)
		}
		f, err := os.OpenFile(s.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("file uplink: %w", err)
		}
		s.f = f
	}
	line := make([]byte, 0, len(b.Payload)+1)
	line = append(append(line, b.Payload...), '\n')
	st, err := s.f.Stat()
	if err != nil {
		s.reset()
		return fmt.Errorf("file uplink: stat %s: %w", s.path, err)
	}
	if _, err := s.f.Write(line); err != nil {
		// Cut a torn line off (disk full), so the file stays one JSON document per line.
		_ = s.f.Truncate(st.Size())
		s.reset()
		return fmt.Errorf("file uplink: write %s: %w", s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		s.reset()
		return fmt.Errorf("file uplink: sync %s: %w", s.path, err)
	}
	return nil
}

// reset drops the handle after an error so the next Send reopens the file.
func (s *Sink) reset() {
	s.f.Close()
	s.f = nil
}

// Close closes the file.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
