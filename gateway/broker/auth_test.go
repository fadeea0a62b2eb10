package broker

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
)

// TestAuthentication logs in over a real broker with good and bad credentials and
// identities; each refused CONNECT gets its MQTT 5 reason code in the CONNACK.
func TestAuthentication(t *testing.T) {
	e := newEnv(t, nil)
	cases := []struct {
		name  string
		login login
		code  byte
	}{
		{"valid user", login{clientID: "c-ok", user: "dev-1", pass: "dev-1-pw"}, 0x00},
		{"wrong password", login{clientID: "c-wrong", user: "dev-1", pass: "dev-2-pw"}, 0x86},
		{"unknown user", login{clientID: "c-unknown", user: "nobody", pass: "x"}, 0x86},
		{"anonymous refused by default", login{clientID: "c-anon"}, 0x86},
		{"password without user name", login{clientID: "c-pw", pass: "dev-1-pw"}, 0x86},
		{"user name with '/'", login{clientID: "c-slash", user: "dev-1/x", pass: "dev-1-pw"}, 0x86},
		{"user name with '#'", login{clientID: "c-hash", user: "#", pass: "x"}, 0x86},
		{"client id with '+'", login{clientID: "c+1", user: "dev-1", pass: "dev-1-pw"}, 0x85},
		{"client id with '/'", login{clientID: "a/b", user: "dev-1", pass: "dev-1-pw"}, 0x85},
		{"client id starting with '$'", login{clientID: "$SYS", user: "dev-1", pass: "dev-1-pw"}, 0x85},
		{"client id of 257 bytes", login{clientID: strings.Repeat("c", 257), user: "dev-1", pass: "dev-1-pw"}, 0x85},
		{"reserved client id", login{clientID: SensorClientID, user: "ops", pass: "ops-pw"}, 0x85},
		{"the relay's client id", login{clientID: RelayClientID, user: "ops", pass: "ops-pw"}, 0x85},
		{"will to a granted topic", login{clientID: "c-will-ok", user: "dev-1", pass: "dev-1-pw",
			will: &paho.WillMessage{Topic: "devices/dev-1/status", Payload: []byte(`{"value": 0}`)}}, 0x00},
		{"will to a granted unrouted topic", login{clientID: "c-will-raw", user: "dev-1", pass: "dev-1-pw",
			will: &paho.WillMessage{Topic: "devices/dev-1/status/raw", Payload: []byte("offline")}}, 0x00},
		{"will to another device's topic", login{clientID: "c-will-bad", user: "dev-1", pass: "dev-1-pw",
			will: &paho.WillMessage{Topic: "devices/dev-2/status", Payload: []byte("offline")}}, 0x87},
		{"will of a user without publish grants", login{clientID: "c-will-reader", user: "reader", pass: "reader-pw",
			will: &paho.WillMessage{Topic: "x", Payload: []byte("offline")}}, 0x87},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, code := e.connect5(t, "tcp", c.login)
			if code != c.code {
				t.Errorf("CONNACK %#x, want %#x", code, c.code)
			}
		})
	}
	for reason, want := range map[ingest.Reason]uint64{ReasonAuthFailed: 4, ReasonBadIdentity: 8, ReasonWillDenied: 2} {
		if got := e.b.Refusals().Count(reason); got != want {
			t.Errorf("%s counted %d times, want %d (one per refused case)", reason, got, want)
		}
	}
}

// TestAnonymous: allow_anonymous gives anonymous clients the broker.anonymous grants only.
func TestAnonymous(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Broker.AllowAnonymous = true
		c.Broker.Anonymous = config.Grants{Publish: []string{"public/{clientid}/#"}, Subscribe: []string{"public/#"}}
	})
	a, code := e.connect5(t, "tcp", login{clientID: "kiosk"})
	if code != 0 {
		t.Fatalf("anonymous CONNACK %#x", code)
	}
	if code, _ := a.publish(t, "public/kiosk/t", 1, "1"); code != 0 {
		t.Errorf("anonymous publish in its grant: %#x", code)
	}
	if code, _ := a.publish(t, "devices/x/t", 1, "1"); code != 0x87 {
		t.Errorf("anonymous publish outside its grant: %#x, want 0x87", code)
	}
	if codes := a.subscribe(t, "public/#", "devices/#"); fmtCodes(codes) != "0x1,0x87" {
		t.Errorf("anonymous SUBACK %s, want 0x1,0x87", fmtCodes(codes))
	}
	if _, code := e.connect5(t, "tcp", login{clientID: "k2", user: "nobody", pass: "x"}); code != 0x86 {
		t.Errorf("an unknown user is not downgraded to anonymous: %#x", code)
	}
}

// TestACL checks publish and subscribe grants with {username} confinement, over a real
// broker, and that nothing denied is stored or delivered.
func TestACL(t *testing.T) {
	e := newEnv(t, nil)
	d1 := e.user(t, "dev-1", "d1")
	d2 := e.user(t, "dev-2", "d2")
	reader := e.user(t, "reader", "r")
	if codes := reader.subscribe(t, "#"); codes[0] != 1 {
		t.Fatalf("reader SUBACK %s", fmtCodes(codes))
	}

	pubs := []struct {
		who   *conn5
		topic string
		code  byte
	}{
		{d1, "devices/dev-1/temperature", 0x00},
		{d1, "devices/dev-1/a/b/c", 0x00},
		{d1, "devices/dev-2/temperature", 0x87},
		{d1, "devices/dev-1", 0x00}, // devices/{username}/# covers its parent level
		{d1, "agg/x", 0x87},         // subscribe grant only
		{d2, "devices/dev-2/temperature", 0x00},
		{d2, "devices/dev-1/temperature", 0x87},
		{reader, "devices/dev-1/temperature", 0x87}, // no publish grant at all
	}
	for _, p := range pubs {
		code, err := p.who.publish(t, p.topic, 1, `{"value": 1}`)
		if code != p.code {
			t.Errorf("publish %s: code %#x (%v), want %#x", p.topic, code, err, p.code)
		}
	}
	// The reader sees exactly the three allowed messages, and the store holds them.
	got := map[string]bool{}
	for i := 0; i < 4; i++ {
		got[reader.next(t).Topic] = true
	}
	reader.none(t, 200*time.Millisecond)
	for _, tp := range []string{"devices/dev-1/temperature", "devices/dev-1/a/b/c", "devices/dev-1", "devices/dev-2/temperature"} {
		if !got[tp] {
			t.Errorf("allowed publish on %s not delivered", tp)
		}
	}
	if n := len(e.records(t)); n != 4 {
		t.Errorf("store holds %d records, want the 4 allowed ones", n)
	}

	subs := []struct {
		who     *conn5
		filters []string
		codes   string
	}{
		{d1, []string{"devices/dev-1/#", "devices/dev-1/t", "agg/#"}, "0x1,0x1,0x1"},
		{d1, []string{"devices/dev-2/#", "devices/+/t", "#", "devices/#"}, "0x87,0x87,0x87,0x87"},
		{d1, []string{"$SYS/#", "$share/g/devices/dev-1/#", "$share/g/devices/dev-2/#"}, "0x87,0x1,0x87"},
		{d2, []string{"devices/dev-2/+", "devices/dev-1/+"}, "0x1,0x87"},
	}
	for _, s := range subs {
		if codes := s.who.subscribe(t, s.filters...); fmtCodes(codes) != s.codes {
			t.Errorf("subscribe %v: SUBACK %s, want %s", s.filters, fmtCodes(codes), s.codes)
		}
	}
	// dev-1 subscribed to its own subtree sees its own message, never dev-2's.
	d2.publish(t, "devices/dev-2/x", 1, "1")
	d1.publish(t, "devices/dev-1/x", 1, "2")
	if m := d1.next(t); m.Topic != "devices/dev-1/x" {
		t.Errorf("dev-1 received %s", m.Topic)
	}
	d1.none(t, 200*time.Millisecond)
}

// TestSessionTakeover: a client id is bound to the user whose session holds it.
func TestSessionTakeover(t *testing.T) {
	e := newEnv(t, nil)
	d1 := e.user(t, "dev-1", "shared-id")
	if _, code := e.connect5(t, "tcp", login{clientID: "shared-id", user: "dev-2", pass: "dev-2-pw"}); code != 0x87 {
		t.Fatalf("takeover by another user: CONNACK %#x, want 0x87", code)
	}
	if code, _ := d1.publish(t, "devices/dev-1/t", 1, "1"); code != 0 {
		t.Errorf("the session's owner was disturbed by the refused takeover: %#x", code)
	}
	if e.b.Refusals().Count(ReasonTakeover) != 1 {
		t.Errorf("takeover not counted")
	}
	// The same user may take its own session over (a device reconnecting).
	again := e.user(t, "dev-1", "shared-id")
	select {
	case <-d1.c.Done():
	case <-time.After(5 * time.Second):
		t.Error("the old connection was not closed by the takeover")
	}
	if code, _ := again.publish(t, "devices/dev-1/t", 1, "2"); code != 0 {
		t.Errorf("publish after own takeover: %#x", code)
	}
}

// TestWillDelivered: an accepted will is published when its client drops, within its
// grants.
func TestWillDelivered(t *testing.T) {
	e := newEnv(t, nil)
	reader := e.user(t, "reader", "r")
	reader.subscribe(t, "devices/#")
	conn, err := e.dial(t, "tcp", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, code, err := connect5(t, conn, login{clientID: "w", user: "dev-1", pass: "dev-1-pw",
		will: &paho.WillMessage{Topic: "devices/dev-1/status", Payload: []byte(`{"value": 0}`)}})
	if code != 0 {
		t.Fatalf("CONNACK %#x %v", code, err)
	}
	conn.Close() // drop without DISCONNECT
	if m := reader.next(t); m.Topic != "devices/dev-1/status" || string(m.Payload) != `{"value": 0}` {
		t.Errorf("will delivered as %s %q", m.Topic, m.Payload)
	}
}

// TestV311Refusals: 3.1.1 clients have no reason codes: a denied subscription gets 0x80, a
// publish refused for good by the guard (denied) or by ingest (malformed) is acknowledged
// and kept in the refused log, not stored, and the connection stays up; a refused login
// fails the CONNECT.
func TestV311Refusals(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.connect3(t, "tcp", login{clientID: "v3-bad", user: "dev-1", pass: "nope"}, nil); err == nil {
		t.Error("3.1.1 login with a wrong password accepted")
	}
	c, err := e.connect3(t, "tcp", login{clientID: "v3", user: "dev-1", pass: "dev-1-pw"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok := c.SubscribeMultiple(map[string]byte{"devices/dev-2/#": 1, "devices/dev-1/#": 1}, nil)
	tok.WaitTimeout(5 * time.Second)
	st := tok.(interface{ Result() map[string]byte }).Result()
	if st["devices/dev-2/#"] != 0x80 || st["devices/dev-1/#"] != 1 {
		t.Errorf("3.1.1 SUBACK %v", st)
	}
	if acked, err := publish3(c, "devices/dev-1/t", 1, "1", 5*time.Second); !acked {
		t.Errorf("allowed 3.1.1 publish not acked: %v", err)
	}
	publish3(c, "devices/dev-2/t", 0, "1", time.Second)
	if acked, err := publish3(c, "devices/dev-2/t", 1, "1", 5*time.Second); !acked {
		t.Errorf("a denied QoS 1 publish was not acknowledged: %v", err)
	}
	if acked, err := publish3(c, "devices/dev-1/t", 1, `{"value": "bad"}`, 5*time.Second); !acked {
		t.Errorf("a malformed QoS 1 publish was not acknowledged: %v", err)
	}
	if acked, err := publish3(c, "devices/dev-1/t", 1, "2", 5*time.Second); !acked || !c.IsConnectionOpen() {
		t.Errorf("connection unusable after denied publishes: %v", err)
	}
	if n := e.b.Refusals().Count(ingest.ReasonNotAuthorized); n != 3 { // a subscription, two publishes
		t.Errorf("not_authorized counted %d times, want 3", n)
	}
	if n := e.b.Refusals().Count(ingest.ReasonMalformed); n != 1 {
		t.Errorf("malformed counted %d times, want 1", n)
	}
	if n := len(e.records(t)); n != 2 {
		t.Errorf("store holds %d records, want the 2 allowed ones", n)
	}
	if got := refusedReasons(t, e); got != "not_authorized,not_authorized,malformed" {
		t.Errorf("refused log holds %s", got)
	}
}

// TestCloseRefusesWaitingLogins: a login waiting for the password-check slot when the
// broker stops is refused at once, and so is every later one. mochi's Close waits for
// each connection's goroutine, so a waiting login held a SIGTERM for up to the slot's
// 10 s wait (the soak saw a stop of 10.08 s during its password attack).
func TestCloseRefusesWaitingLogins(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := []config.User{{Username: "dev", PasswordHash: string(hash)}}
	c := newCredentials(users, clock.NewFake(time.Unix(1_700_000_000, 0))) // its timers never fire
	c.mu.Lock()
	c.running = true // a check in progress holds the slot
	c.mu.Unlock()

	src := netip.MustParsePrefix("127.0.0.1/32")
	done := make(chan error, 1)
	go func() {
		_, err := c.check("dev", []byte("secret"), src)
		done <- err
	}()
	testutil.Eventually(t, time.Minute, "the login queued for the slot", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue) == 1
	})
	c.close()
	select {
	case err := <-done:
		if !errors.Is(err, errAuthBusy) {
			t.Fatalf("waiting login: err %v, want %v", err, errAuthBusy)
		}
	case <-time.After(time.Minute):
		t.Fatal("a login waiting for the slot still waits after close")
	}
	if _, err := c.check("dev", []byte("secret"), src); !errors.Is(err, errStopping) {
		t.Fatalf("login after close: err %v, want %v", err, errStopping)
	}
}
