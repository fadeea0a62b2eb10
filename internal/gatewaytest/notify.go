package gatewaytest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// NotifySocket plays systemd's side of NOTIFY_SOCKET: it records every datagram.
type NotifySocket struct {
	Path string
	mu   sync.Mutex
	msgs []string
}

// NewNotifySocket listens on a fresh socket until the end of the test.
func NewNotifySocket(t testing.TB) *NotifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "sd") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &NotifySocket{Path: filepath.Join(dir, "notify")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return n
}

// Messages returns every datagram received, whole.
func (n *NotifySocket) Messages() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// States returns the first line of each datagram (READY=1, WATCHDOG=1, ...).
func (n *NotifySocket) States() []string {
	var out []string
	for _, m := range n.Messages() {
		out = append(out, strings.SplitN(m, "\n", 2)[0])
	}
	return out
}

// Count returns how many datagrams began with state.
func (n *NotifySocket) Count(state string) int {
	c := 0
	for _, s := range n.States() {
		if s == state {
			c++
		}
	}
	return c
}
