// Package gatewaytest runs a real gateway in-process for tests and benchmarks.
package gatewaytest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/config"
)

// Running is a gateway running in-process.
type Running struct {
	G *gateway.Gateway

	cancel context.CancelFunc
	errc   chan error
	mu     sync.Mutex
	done   bool
}

// Start builds the gateway for cfg and runs it until it is ready (at most 10 s) or fails
// the test. It is stopped at the end of the test, which fails if Run returned an error
// that no explicit Stop call returned first.
func Start(t testing.TB, cfg *config.Config, opts gateway.Options) *Running {
	t.Helper()
	g, err := gateway.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{G: g, cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-r.errc:
		cancel()
		r.done = true
		t.Fatalf("gateway stopped at start: %v", err)
	case <-time.After(10 * time.Second):
		t.Cleanup(func() { r.Stop() })
		t.Fatal("gateway not ready after 10s")
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("gateway stopped with error: %v", err)
		}
	})
	return r
}

// Stop cancels the gateway and waits for Run to return. The first call returns Run's
// error; later calls return nil.
func (r *Running) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return nil
	}
	r.done = true
	r.cancel()
	return <-r.errc
}

// Child is the body of a re-executed test binary that plays the daemon (crash tests): it
// runs the gateway on the config at path until killed, logging warnings to stderr, and
// returns the process exit code.
func Child(path string, opts gateway.Options) int {
	cfg, err := Load(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g, err := gateway.New(cfg, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := g.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
