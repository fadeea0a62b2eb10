package buffer_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/edgegate/edgegate/internal/testutil"
)

// TestKill9Loop runs the real gateway in a child process on a temporary data_dir, has
// several paho clients publish QoS 1 readings with ids into it, and SIGKILLs it at a random
// moment, 20 times. After each kill the store must open cleanly and hold every reading
// that was acknowledged, exactly once — including those a client resent because it never
// saw their PUBACK.
func TestKill9Loop(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a child process 20 times (~1 min)")
	}
	const rounds, clients = 20, 4
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	path := writeConfig(t, dir, addr, "")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))

	acked := map[string]bool{}    // every id whose PUBACK a client saw
	pending := map[int][]string{} // per client: sent, not acknowledged; resent next round
	next := make([]int, clients)  // per client: the next new reading
	var published int
	for round := 1; round <= rounds; round++ {
		cmd := startChild(t, path)
		type sent struct {
			id  string
			tok paho.Token
		}
		var mu sync.Mutex // guards all
		var all []sent
		var wg sync.WaitGroup
		stopPub := make(chan struct{})
		conns := make([]paho.Client, clients)
		for c := 0; c < clients; c++ {
			conns[c] = connectRetry(t, addr, fmt.Sprintf("crash-%d", c))
		}
		for c := 0; c < clients; c++ {
			resend := pending[c]
			pending[c] = nil
			wg.Add(1)
			go func() {
				defer wg.Done()
				send := func(id string) {
					tok := conns[c].Publish(fmt.Sprintf("devices/crash-%d/temperature", c), 1, false,
						fmt.Sprintf(`{"value": %d, "id": %q}`, len(id), id))
					mu.Lock()
					all = append(all, sent{id, tok})
					mu.Unlock()
				}
				for _, id := range resend {
					send(id)
				}
				var window []paho.Token
				for {
					select {
					case <-stopPub:
						return
					default:
					}
					mu.Lock()
					id := fmt.Sprintf("crash-%d:%06d", c, next[c])
					next[c]++
					mu.Unlock()
					send(id)
					mu.Lock()
					window = append(window, all[len(all)-1].tok)
					mu.Unlock()
					if len(window) == 20 { // keep up to 20 in flight, like a device's inflight window
						window[0].WaitTimeout(2 * time.Second)
						window = window[1:]
					}
				}
			}()
		}
		time.Sleep(time.Duration(100+rng.IntN(500)) * time.Millisecond)
		// What counts as acknowledged is decided before the kill: a paho token that
		// completes afterwards proves nothing.
		mu.Lock()
		done := map[string]bool{}
		for _, s := range all {
			select {
			case <-s.tok.Done():
				if s.tok.Error() == nil {
					done[s.id] = true
				}
			default:
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		mu.Unlock()
		cmd.Wait()
		close(stopPub)
		wg.Wait()
		for _, c := range conns {
			c.Disconnect(0)
		}
		for _, s := range all {
			published++
			if done[s.id] {
				acked[s.id] = true
				continue
			}
			var c int
			fmt.Sscanf(s.id, "crash-%d:", &c)
			if !acked[s.id] {
				pending[c] = append(pending[c], s.id)
			}
		}
		// The store opens cleanly and holds every acknowledged id exactly once.
		ids := rawIDs(t, dir)
		for id, n := range ids {
			if n != 1 {
				t.Fatalf("round %d: %s is in the raw log %d times", round, id, n)
			}
		}
		var missing []string
		for id := range acked {
			if ids[id] == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			t.Fatalf("round %d: %d acknowledged readings are missing, e.g. %v", round, len(missing), missing[:min(5, len(missing))])
		}
		t.Logf("round %d: %d acknowledged so far, %d in the log, %d to resend", round, len(acked), len(ids), countPending(pending))
	}
	if len(acked) < rounds*20 {
		t.Fatalf("only %d readings were acknowledged over %d rounds: the test exercised little", len(acked), rounds)
	}
}

func countPending(p map[int][]string) int {
	n := 0
	for _, ids := range p {
		n += len(ids)
	}
	return n
}

func startChild(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	args := []string{os.Args[0], "-test.run=^$"}
	if wrap := os.Getenv(childExecEnv); wrap != "" {
		args = append(strings.Fields(wrap), args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	cmd.Stderr = logWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}

// connectRetry connects a paho client once the child's broker listens.
func connectRetry(t *testing.T, addr, id string) paho.Client {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(2 * time.Second)
		c := paho.NewClient(o)
		tok := c.Connect()
		if tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child's broker did not accept %s: %v", id, tok.Error())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
