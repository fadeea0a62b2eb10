// Package bindhint turns a failed bind of a listening socket into an error a newcomer can
// act on: which listener and address, who likely holds the port, and the fix (issue 22).
package bindhint

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Listener names what failed to bind, for the message.
type Listener struct {
	// What is the listener, e.g. "broker listener 0 (tcp)" or "ops http".
	What string
	// Key is the config key that sets the address, e.g. "broker.listeners[0].address".
	Key string
	// Addr is the configured address.
	Addr string
}

// Listen is net.Listen("tcp", l.Addr) with Explain applied to its error.
func Listen(l Listener) (net.Listener, error) {
	ln, err := net.Listen("tcp", l.Addr)
	if err != nil {
		return nil, Explain(l, err)
	}
	return ln, nil
}

// Explain wraps err, the error of binding l.Addr, with the listener, the likely cause and
// the fix when it recognises the cause (address in use, privileged port, address not on
// this host); otherwise it only names the listener. The result wraps err (errors.Is works).
// It may read /proc to name the process that holds the port.
func Explain(l Listener, err error) error {
	port := portOf(l.Addr)
	var hint string
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		hint = inUse(l, port, holder(port))
	case errors.Is(err, syscall.EACCES) && port > 0 && port < 1024:
		hint = fmt.Sprintf("ports below 1024 need the CAP_NET_BIND_SERVICE capability: "+
			"under systemd, `sudo systemctl edit edgegate` and add [Service] AmbientCapabilities=CAP_NET_BIND_SERVICE "+
			"and CapabilityBoundingSet=CAP_NET_BIND_SERVICE; run by hand, `sudo setcap cap_net_bind_service=+ep $(command -v edgegate)`; "+
			"or set %s to a port of 1024 or more", l.Key)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		hint = fmt.Sprintf("no network interface of this machine has that IP address (`ip -brief address` lists them): "+
			"set %s to one of them, or to :%d for all", l.Key, port)
	}
	if hint == "" {
		return fmt.Errorf("%s: listen on %s (%s): %w", l.What, l.Addr, l.Key, err)
	}
	return fmt.Errorf("%s: listen on %s (%s): %w: %s", l.What, l.Addr, l.Key, err, hint)
}

func inUse(l Listener, port int, who string) string {
	var b strings.Builder
	if who != "" {
		fmt.Fprintf(&b, "%s holds port %d", who, port)
	} else {
		fmt.Fprintf(&b, "another process holds port %d (`sudo ss -ltnp 'sport = :%d'` names it)", port, port)
	}
	isMosquitto := strings.HasPrefix(who, "mosquitto ")
	switch {
	case isMosquitto || (who == "" && port == 1883):
		if !isMosquitto {
			b.WriteString("; likely Debian's mosquitto, which starts a broker on 1883 when installed")
		}
		fmt.Fprintf(&b, "; stop it with `sudo systemctl disable --now mosquitto` (mosquitto_sub and mosquitto_pub keep working), "+
			"or set %s to another port (e.g. :%d)", l.Key, port+1)
	case strings.HasPrefix(who, "edgegate "):
		fmt.Fprintf(&b, "; another edgegate runs (`systemctl status edgegate`): stop it, or set %s to another port", l.Key)
	default:
		if who == "" {
			b.WriteString("; often another edgegate (`systemctl status edgegate`) or another broker")
		}
		fmt.Fprintf(&b, "; stop it, or set %s to another port", l.Key)
	}
	return b.String()
}

func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return 0
	}
	return n
}

// holder names the process listening on TCP port ("mosquitto (pid 812)") from /proc, or
// returns "" when it cannot tell: not Linux, or the process belongs to another user and
// this one may not read its file descriptors (the edgegate user under systemd).
func holder(port int) string {
	if port <= 0 {
		return ""
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		listeningInodes(f, port, inodes)
	}
	if len(inodes) == 0 {
		return ""
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		fds, err := os.ReadDir(filepath.Join(p, "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(p, "fd", fd.Name()))
			if err != nil {
				continue
			}
			inode, ok := strings.CutPrefix(target, "socket:[")
			if !ok || !inodes[strings.TrimSuffix(inode, "]")] {
				continue
			}
			comm, err := os.ReadFile(filepath.Join(p, "comm"))
			if err != nil {
				return ""
			}
			return fmt.Sprintf("%s (pid %s)", strings.TrimSpace(string(comm)), filepath.Base(p))
		}
	}
	return ""
}

// listeningInodes adds the socket inodes of the sockets in LISTEN state on port found in
// a /proc/net/tcp{,6} table.
func listeningInodes(file string, port int, into map[string]bool) {
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[3] != "0A" || !strings.HasSuffix(fs[1], want) {
			continue
		}
		into[fs[9]] = true
	}
}
