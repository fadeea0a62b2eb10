package bindhint

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestPortHeldByAnotherListener binds a port for real, then binds it again through Listen:
// the error names the listener, its address and key, the process that holds the port
// (this test binary), and the fix.
func TestPortHeldByAnotherListener(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	ln, err := Listen(Listener{What: "broker listener 0 (tcp)", Key: "broker.listeners[0].address", Addr: addr})
	if err == nil {
		ln.Close()
		t.Fatalf("second bind of %s succeeded", addr)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error does not wrap EADDRINUSE: %v", err)
	}
	port := portOf(addr)
	comm, _ := os.ReadFile("/proc/self/comm")
	for _, want := range []string{
		"broker listener 0 (tcp): listen on " + addr + " (broker.listeners[0].address)",
		"address already in use",
		fmt.Sprintf("%s (pid %d) holds port %d", strings.TrimSpace(string(comm)), os.Getpid(), port),
		"stop it, or set broker.listeners[0].address to another port",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// TestExplain covers the causes whose conditions a test cannot set up for real (a port
// below 1024 refused to root, the standard 1883 held by a process of another user).
func TestExplain(t *testing.T) {
	bindErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", errno)}
	}
	for _, tc := range []struct {
		name string
		l    Listener
		err  error
		want []string
	}{
		{
			name: "privileged port",
			l:    Listener{What: "broker listener 1 (tls)", Key: "broker.listeners[1].address", Addr: ":883"},
			err:  bindErr(syscall.EACCES),
			want: []string{
				"broker listener 1 (tls): listen on :883 (broker.listeners[1].address): listen tcp: bind: permission denied: ",
				"ports below 1024 need the CAP_NET_BIND_SERVICE capability",
				"AmbientCapabilities=CAP_NET_BIND_SERVICE",
				"sudo setcap cap_net_bind_service=+ep",
				"or set broker.listeners[1].address to a port of 1024 or more",
			},
		},
		{
			name: "1883 held, holder unknown",
			l:    Listener{What: "broker listener 0 (tcp)", Key: "broker.listeners[0].address", Addr: "0.0.0.0:1883"},
			err:  bindErr(syscall.EADDRINUSE),
			want: []string{
				"another process holds port 1883 (`sudo ss -ltnp 'sport = :1883'` names it)",
				"likely Debian's mosquitto, which starts a broker on 1883 when installed",
				"`sudo systemctl disable --now mosquitto`",
				"or set broker.listeners[0].address to another port (e.g. :1884)",
			},
		},
		{
			name: "ops port held, holder unknown",
			l:    Listener{What: "ops http", Key: "ops.listen", Addr: "127.0.0.1:9464"},
			err:  bindErr(syscall.EADDRINUSE),
			want: []string{
				"ops http: listen on 127.0.0.1:9464 (ops.listen)",
				"another process holds port 9464",
				"often another edgegate (`systemctl status edgegate`)",
				"stop it, or set ops.listen to another port",
			},
		},
		{
			name: "address not here",
			l:    Listener{What: "ops http", Key: "ops.listen", Addr: "10.9.9.9:9464"},
			err:  bindErr(syscall.EADDRNOTAVAIL),
			want: []string{"no network interface of this machine has that IP address", "set ops.listen to one of them, or to :9464 for all"},
		},
		{
			name: "unknown cause: listener named, no advice",
			l:    Listener{What: "ops http", Key: "ops.listen", Addr: "127.0.0.1:9464"},
			err:  bindErr(syscall.EMFILE),
			want: []string{"ops http: listen on 127.0.0.1:9464 (ops.listen): listen tcp: bind: too many open files"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Explain(tc.l, tc.err)
			if !errors.Is(err, tc.err) {
				t.Errorf("%v does not wrap %v", err, tc.err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
