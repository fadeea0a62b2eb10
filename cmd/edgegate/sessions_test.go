package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/edgegate/edgegate/internal/testutil"
)

// TestDurableSessionsSurviveRestart (issue 16, item 12): persistent sessions — Go paho
// with clean:false (MQTT 3.1.1) and paho.golang with a session expiry (MQTT 5) — subscribe
// at QoS 1 and go offline; a device publishes one reading for each; the daemon (a child
// process) restarts, by SIGTERM and by kill -9. Each subscriber reconnects: the broker says
// its session is present, the reading queued while it was offline arrives, and its
// subscription delivers a new reading.
func TestDurableSessionsSurviveRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon as a child process; skipped with -short")
	}
	for _, stop := range []string{"sigterm", "kill-9"} {
		t.Run(stop, func(t *testing.T) {
			dir := t.TempDir()
			d := &e2eDaemon{t: t, cfg: filepath.Join(dir, "edgegate.yaml"), addr: testutil.FreeAddr(t), logPath: filepath.Join(dir, "daemon.log")}
			opsAddr := testutil.FreeAddr(t)
			hash := func(pw string) string {
				h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
				if err != nil {
					t.Fatal(err)
				}
				return string(h)
			}
			cfg := fmt.Sprintf(`
gateway: {id: sessions, data_dir: %q}
broker:
  listeners: [{type: tcp, address: %q}]
  users:
    - {username: dev, password_hash: %q, publish: ["devices/{username}/#"]}
    - {username: sub, password_hash: %q, subscribe: ["devices/#"]}
routes:
  - {topic: "devices/+device/+metric", format: json, series: "{device}/{metric}"}
ops: {log: {level: info}, clock: {mode: trust}, listen: %q}
`, filepath.Join(dir, "data"), d.addr, hash("dev-pw"), hash("sub-pw"), opsAddr)
			if err := os.WriteFile(d.cfg, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					b, _ := os.ReadFile(d.logPath)
					t.Logf("daemon log:\n%s", tail(b, 8192))
				}
			})
			d.start()

			s3 := newSub311(t, d.addr)
			s3.subscribe(t, "devices/dev/t3")
			s5 := newSub5(t, d.addr)
			s5.subscribe(t, "devices/dev/t5")
			if s3.present || s5.present {
				t.Fatal("a first session was present")
			}
			s3.close()
			s5.close()

			pub := sessionsPublisher(t, d.addr)
			pub.publish(t, "devices/dev/t3", `{"value": 1}`)
			pub.publish(t, "devices/dev/t5", `{"value": 2}`)
			pub.close()

			if stop == "kill-9" {
				// Session writes are group-committed off the publisher's path: wait for
				// them, then crash.
				testutil.Eventually(t, 10*time.Second, "session writes committed", func() bool {
					m := scrape(t, opsAddr)
					return m["edgegate_broker_session_writes_pending"] == 0 && m["edgegate_broker_session_messages"] == 2
				})
				d.kill()
			} else {
				d.stop()
			}
			d.start()
			// The broker's port takes connections into its backlog before the sessions are
			// restored; /readyz answers once the daemon runs.
			testutil.Eventually(t, 30*time.Second, "ready after the restart", func() bool {
				res, err := http.Get("http://" + opsAddr + "/readyz")
				if err != nil {
					return false
				}
				res.Body.Close()
				return res.StatusCode == http.StatusOK
			})
			if m := scrape(t, opsAddr); m["edgegate_broker_sessions"] != 2 || m["edgegate_broker_session_messages"] != 2 {
				t.Errorf("after the restart: %v sessions, %v messages stored, want 2 and 2", m["edgegate_broker_sessions"], m["edgegate_broker_session_messages"])
			}

			s3 = newSub311(t, d.addr)
			s5 = newSub5(t, d.addr)
			if !s3.present || !s5.present {
				t.Errorf("session present after the restart: 3.1.1 %v, MQTT 5 %v", s3.present, s5.present)
			}
			if got := s3.next(t); got != "devices/dev/t3 "+`{"value": 1}` {
				t.Errorf("3.1.1 session: queued message %q", got)
			}
			if got := s5.next(t); got != "devices/dev/t5 "+`{"value": 2}` {
				t.Errorf("MQTT 5 session: queued message %q", got)
			}
			pub = sessionsPublisher(t, d.addr)
			pub.publish(t, "devices/dev/t3", `{"value": 3}`)
			pub.publish(t, "devices/dev/t5", `{"value": 4}`)
			if got := s3.next(t); got != "devices/dev/t3 "+`{"value": 3}` {
				t.Errorf("3.1.1 session: subscription after the restart delivered %q", got)
			}
			if got := s5.next(t); got != "devices/dev/t5 "+`{"value": 4}` {
				t.Errorf("MQTT 5 session: subscription after the restart delivered %q", got)
			}
			testutil.Eventually(t, 10*time.Second, "acknowledged messages forgotten", func() bool {
				return scrape(t, opsAddr)["edgegate_broker_session_messages"] == 0
			})
			pub.close()
			s3.close()
			s5.close()
			d.stop()
		})
	}
}

// scrape reads the daemon's metrics without labels.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for name, f := range testutil.ParseText(t, string(b)) {
		if v, ok := f.Samples[""]; ok {
			out[name] = v
		}
	}
	return out
}

type sessionsPub struct{ c paho.Client }

func sessionsPublisher(t *testing.T, addr string) *sessionsPub {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("dev-1").SetUsername("dev").SetPassword("dev-pw").
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	return &sessionsPub{c}
}

func (p *sessionsPub) publish(t *testing.T, topic, payload string) {
	t.Helper()
	if tok := p.c.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func (p *sessionsPub) close() { p.c.Disconnect(100) }

// sub311 is a persistent 3.1.1 subscriber (Go paho, clean:false).
type sub311 struct {
	c       paho.Client
	msgs    chan string
	present bool
}

func newSub311(t *testing.T, addr string) *sub311 {
	t.Helper()
	s := &sub311{msgs: make(chan string, 16)}
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("sub-311").SetUsername("sub").SetPassword("sub-pw").
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { s.msgs <- m.Topic() + " " + string(m.Payload()) })
	s.c = paho.NewClient(o)
	tok := s.c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 subscriber connect: %v", tok.Error())
	}
	s.present = tok.(*paho.ConnectToken).SessionPresent()
	return s
}

func (s *sub311) subscribe(t *testing.T, filter string) {
	t.Helper()
	if tok := s.c.Subscribe(filter, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
}

func (s *sub311) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case <-time.After(10 * time.Second):
		return "(nothing)"
	}
}

func (s *sub311) close() { s.c.Disconnect(100) }

// sub5 is a persistent MQTT 5 subscriber (paho.golang, session expiry 1 h).
type sub5 struct {
	c       *paho5.Client
	msgs    chan string
	present bool
}

func newSub5(t *testing.T, addr string) *sub5 {
	t.Helper()
	s := &sub5{msgs: make(chan string, 16)}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s.c = paho5.NewClient(paho5.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho5.PublishReceived) (bool, error){func(p paho5.PublishReceived) (bool, error) {
			s.msgs <- p.Packet.Topic + " " + string(p.Packet.Payload)
			return true, nil
		}},
		OnClientError: func(error) {},
	})
	expiry := uint32(3600)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := s.c.Connect(ctx, &paho5.Connect{
		ClientID: "sub-5", Username: "sub", UsernameFlag: true, Password: []byte("sub-pw"), PasswordFlag: true,
		KeepAlive: 30, CleanStart: false, Properties: &paho5.ConnectProperties{SessionExpiryInterval: &expiry},
	})
	if err != nil {
		t.Fatalf("MQTT 5 subscriber connect: %v", err)
	}
	s.present = ca.SessionPresent
	return s
}

func (s *sub5) subscribe(t *testing.T, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := s.c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 1 {
		t.Fatalf("subscribe: %v %v", sa, err)
	}
}

func (s *sub5) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case <-time.After(10 * time.Second):
		return "(nothing)"
	}
}

func (s *sub5) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.c.Disconnect(&paho5.Disconnect{})
	select {
	case <-s.c.Done():
	case <-ctx.Done():
	}
}
