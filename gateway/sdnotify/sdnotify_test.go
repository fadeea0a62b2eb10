package sdnotify

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgegate/edgegate/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSystemd is a NOTIFY_SOCKET that records every datagram.
type fakeSystemd struct {
	conn *net.UnixConn
	msgs chan string
}

func listenNotify(t *testing.T) *fakeSystemd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	f := &fakeSystemd{conn: conn, msgs: make(chan string, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			f.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return f
}

func (f *fakeSystemd) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-f.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10s")
		return ""
	}
}

func TestNotifierStates(t *testing.T) {
	sd := listenNotify(t)
	var n Notifier
	steps := []struct {
		send func() error
		want []string
	}{
		{func() error { return n.Ready("broker on :1883") }, []string{"READY=1", "STATUS=broker on :1883"}},
		{n.Watchdog, []string{"WATCHDOG=1"}},
		{n.Reloading, []string{"RELOADING=1", "MONOTONIC_USEC="}},
		{func() error { return n.Status("two\nlines") }, []string{"STATUS=two lines"}},
		{func() error { return n.ExtendStart(30*time.Second, "converting") }, []string{"EXTEND_TIMEOUT_USEC=30000000", "STATUS=converting"}},
		{func() error { return n.Stopping("bye") }, []string{"STOPPING=1", "STATUS=bye"}},
	}
	for _, s := range steps {
		if err := s.send(); err != nil {
			t.Fatal(err)
		}
		got := sd.next(t)
		for _, w := range s.want {
			if !strings.Contains(got, w) {
				t.Errorf("datagram %q lacks %q", got, w)
			}
		}
	}
}

func TestNotifierOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	var n Notifier
	if err := n.Ready("x"); err != nil {
		t.Errorf("without NOTIFY_SOCKET Ready must be a no-op, got %v", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	tests := []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"30000000", "", 15 * time.Second, true},
		{"", "", 0, false},
		{"30000000", "1", 0, false}, // meant for another process
		{"garbage", "", 0, false},
	}
	for _, tc := range tests {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		got, ok := WatchdogInterval()
		if got != tc.want || ok != tc.ok {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: got %v %v, want %v %v", tc.usec, tc.pid, got, ok, tc.want, tc.ok)
		}
	}
}

// The watchdog pings at start and after each round whose probes all pass, and skips the
// ping while one fails; systemd then restarts the service after WatchdogSec.
func TestWatchdogPingsOnlyWhileProgressing(t *testing.T) {
	sd := listenNotify(t)
	clk := clock.NewFake(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	var healthy atomic.Bool
	healthy.Store(true)
	var stalls, pings atomic.Int32
	var n Notifier
	w := &Watchdog{
		Interval: 10 * time.Second,
		Probes: []Probe{
			{Name: "store", Check: func(context.Context) error { return nil }},
			{Name: "ingest", Check: func(context.Context) error {
				if healthy.Load() {
					return nil
				}
				return errors.New("stuck")
			}},
		},
		// Counted where it is sent: the round has ended when settle returns, whereas the
		// datagram may still be on its way to sd.msgs.
		Ping:    func() error { pings.Add(1); return n.Watchdog() },
		OnStall: func(p string, _ error) { stalls.Add(1) },
		Clock:   clk,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	if got := sd.next(t); got != "WATCHDOG=1" {
		t.Fatalf("first ping: %q", got)
	}
	// settle waits until the watchdog sleeps again, i.e. finished its round.
	settle := func() {
		for clk.Timers() == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	round := func() {
		settle()
		clk.Advance(10 * time.Second)
	}
	round()
	if got := sd.next(t); got != "WATCHDOG=1" {
		t.Fatalf("healthy round: %q", got)
	}
	healthy.Store(false)
	settle()
	before := pings.Load()
	round()
	round()
	settle()
	if p := pings.Load(); p != before {
		t.Fatalf("pinged %d times while a probe failed", p-before)
	}
	select {
	case m := <-sd.msgs:
		t.Fatalf("pinged while a probe failed: %q", m)
	default:
	}
	if stalls.Load() != 2 {
		t.Errorf("stalls = %d, want 2", stalls.Load())
	}
	healthy.Store(true)
	round()
	if got := sd.next(t); got != "WATCHDOG=1" {
		t.Fatalf("recovered round: %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
