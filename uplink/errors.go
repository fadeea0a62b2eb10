package uplink

import (
	"bytes"
	"compress/gzip"
	"time"
)

// RetryAfter wraps a retryable send error with the wait the upstream asked for (HTTP
// Retry-After); the uplink waits at least that long, within its backoff cap.
func RetryAfter(err error, d time.Duration) error { return &retryAfterError{err: err, after: d} }

type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string {
	return e.err.Error() + " (retry after " + e.after.String() + ")"
}
func (e *retryAfterError) Unwrap() error { return e.err }

// gzipBytes compresses a batch payload. BestSpeed: on a Pi the CPU is scarcer than the
// uplink's bytes only at low compression levels, and JSON batches already shrink ~8× there.
func gzipBytes(p []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(p) / 4)
	w, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(p); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
