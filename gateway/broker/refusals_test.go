package broker

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/ingest"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/logs"
	"github.com/edgegate/edgegate/internal/testutil"
)

// refusedEntries returns what the refused log holds, oldest first, once no publish waits
// for its answer.
func refusedEntries(t *testing.T, e *env) []Refused {
	t.Helper()
	e.records(t) // settles ingest
	var out []Refused
	_, err := e.store.Read(logs.Refused, 0, 0, func(_ uint64, v []byte) error {
		var r Refused
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func refusedReasons(t *testing.T, e *env) string {
	t.Helper()
	var rs []string
	for _, r := range refusedEntries(t, e) {
		rs = append(rs, r.Reason)
	}
	return strings.Join(rs, ",")
}

// TestV311PermanentRefusalsDoNotWedge (issue 16, item 10): a 3.1.1 client with an in-flight
// window of 20 (Python paho's default; emulated over Go paho) sends 30 publishes the gateway
// refuses for good — malformed, outside its grants, on a too deep topic, QoS 1 and 2 — then
// valid readings. Every refused one is acknowledged, so the window never fills and the
// valid readings are stored; the refused ones are in the refused log with their reason, not
// in the raw log.
func TestV311PermanentRefusalsDoNotWedge(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Broker.MaxTopicLevels = 4 })
	c, err := e.connect3(t, "tcp", login{clientID: "window", user: "dev-1", pass: "dev-1-pw"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const window = 20
	var inflight []paho3.Token
	send := func(topic string, qos byte, payload string) {
		if len(inflight) == window {
			if !inflight[0].WaitTimeout(10 * time.Second) {
				t.Fatalf("in-flight window of %d full: the oldest publish was never acknowledged", window)
			}
			if err := inflight[0].Error(); err != nil {
				t.Fatalf("publish: %v", err)
			}
			inflight = inflight[1:]
		}
		inflight = append(inflight, c.Publish(topic, qos, false, payload))
	}
	const refused, valid = 30, 20
	for i := 0; i < refused; i++ {
		switch i % 3 {
		case 0:
			send("devices/dev-1/t", byte(1+i%2), `{"value": "warm"}`) // malformed
		case 1:
			send("devices/dev-2/t", 1, `{"value": 1}`) // not authorized
		case 2:
			send("devices/dev-1/a/b/c", 1, `{"value": 1}`) // topic_invalid
		}
	}
	for i := 0; i < valid; i++ {
		send("devices/dev-1/t", 1, fmt.Sprintf(`{"value": %d}`, i))
	}
	for _, tok := range inflight {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("a publish at the end was not acknowledged: %v", tok.Error())
		}
	}
	if !c.IsConnectionOpen() {
		t.Error("connection closed after permanent refusals")
	}
	if n := len(e.records(t)); n != valid {
		t.Errorf("raw log holds %d records, want the %d valid ones", n, valid)
	}
	rs := refusedEntries(t, e)
	if len(rs) != refused {
		t.Fatalf("refused log holds %d entries, want %d", len(rs), refused)
	}
	want := []ingest.Reason{ingest.ReasonMalformed, ingest.ReasonNotAuthorized, ingest.ReasonTopicInvalid}
	for i, r := range rs {
		if r.Reason != string(want[i%3]) || r.Client != "window" || r.User != "dev-1" || r.Payload == nil || r.Error == "" {
			t.Errorf("refused entry %d: %+v", i, r)
		}
	}
	if rs[0].QoS != 1 || rs[3].QoS != 2 || *rs[0].Payload != `{"value": "warm"}` || rs[1].Topic != "devices/dev-2/t" {
		t.Errorf("refused entries keep the message as sent: %+v %+v", rs[0], rs[1])
	}
	if st := e.hook.RefusedStats(); st.Kept.Load() != refused || st.Failed.Load() != 0 {
		t.Errorf("refused log counters: kept %d, failed %d", st.Kept.Load(), st.Failed.Load())
	}
}

// TestMQTTjsRefusedNotResent (issue 16, item 10): MQTT.js (3.1.1, clean: false) resends
// every unacknowledged publish at each reconnect, forever. Refused ones are acknowledged
// now: after two reconnects the broker has seen each refused message once, and MQTT.js
// holds none.
func TestMQTTjsRefusedNotResent(t *testing.T) {
	e := newEnv(t, nil)
	const n = 5
	evs := runMQTTjs(t, map[string]any{
		"scenario": "refused", "url": "mqtt://" + e.addr["tcp"], "clientId": "js-refused", "clean": false,
		"username": "dev-1", "password": password("dev-1"), "protocolVersion": 4,
		"topic": "devices/dev-1/t", "bad": `{"value": "warm"}`, "n": n, "reconnects": 2,
	})
	if g := last(t, evs, "good"); g["result"] != "acked" {
		t.Errorf("valid readings after refused ones: %v", g["result"])
	}
	d := last(t, evs, "done")
	if d["refused"] != "acked" {
		t.Errorf("MQTT.js still holds the refused publishes after %v connects", d["connects"])
	}
	testutil.Eventually(t, 10*time.Second, "refusals counted", func() bool { return e.b.Refusals().Count(ingest.ReasonMalformed) >= n })
	if got := e.b.Refusals().Count(ingest.ReasonMalformed); got != n {
		t.Errorf("the broker refused %d malformed publishes, want %d: MQTT.js resent them", got, n)
	}
	if got := len(refusedEntries(t, e)); got != n {
		t.Errorf("refused log holds %d entries, want %d", got, n)
	}
}

// TestTransientRefusalDisconnects: a publish the gateway cannot store now (here: the
// store is closed, as at shutdown) is not acknowledged; a 3.1.1 client is disconnected so
// that it resends later, an MQTT 5 client gets the reason code. Nothing goes to the refused
// log: resending can succeed.
func TestTransientRefusalDisconnects(t *testing.T) {
	e := newEnv(t, nil)
	c3, err := e.connect3(t, "tcp", login{clientID: "v3", user: "dev-1", pass: "dev-1-pw"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c5 := e.user(t, "dev-2", "v5")
	if acked, err := publish3(c3, "devices/dev-1/t", 1, "1", 5*time.Second); !acked {
		t.Fatalf("publish before: %v", err)
	}
	e.store.Close()
	if acked, _ := publish3(c3, "devices/dev-1/t", 1, "2", time.Second); acked {
		t.Error("a publish that could not be stored was acknowledged")
	}
	testutil.Eventually(t, 10*time.Second, "3.1.1 client disconnected", func() bool { return !c3.IsConnectionOpen() })
	if code, _ := c5.publish(t, "devices/dev-2/t", 1, "3"); code != 0x80 {
		t.Errorf("MQTT 5 client answered %#x, want 0x80", code)
	}
	if e.b.Refusals().Count(ingest.ReasonShutdown) != 2 {
		t.Errorf("shutting_down counted %d", e.b.Refusals().Count(ingest.ReasonShutdown))
	}
	if st := e.hook.RefusedStats(); st.Kept.Load() != 0 {
		t.Errorf("a transient refusal went to the refused log")
	}
}

// TestRefusedLogBounded: the refused log keeps the newest entries within
// refused_log.max_entries and max_bytes, trimming the oldest, across a restart with
// smaller bounds; MQTT 5 clients still get their reason codes; a binary payload is kept
// in base64.
func TestRefusedLogBounded(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Broker.RefusedLog.MaxEntries = 5 })
	c := e.user(t, "dev-1", "bounded")
	for i := 0; i < 8; i++ {
		if code, _ := c.publish(t, "devices/dev-1/t", 1, fmt.Sprintf(`{"value": "x%d"}`, i)); code != 0x99 {
			t.Fatalf("refusal %d answered %#x, want 0x99", i, code)
		}
	}
	if code, _ := c.publish(t, "devices/dev-1/t", 1, "\xff\xfe"); code != 0x99 {
		t.Fatalf("binary refusal answered %#x", code)
	}
	rs := refusedEntries(t, e)
	if len(rs) != 5 || *rs[0].Payload != `{"value": "x4"}` || rs[4].Payload != nil || rs[4].PayloadBase64 != "//4=" || rs[4].PayloadBytes != 2 {
		t.Fatalf("refused log after 9 refusals with max_entries 5: %+v", rs)
	}
	if st := e.hook.RefusedStats(); st.Kept.Load() != 9 || st.Trimmed.Load() != 4 {
		t.Errorf("kept %d trimmed %d, want 9 and 4", st.Kept.Load(), st.Trimmed.Load())
	}

	// A new broker on the same store with a byte bound of two entries' worth: the oldest go.
	size := len(refusedEntry(time.Now(), "bounded", "dev-1", "devices/dev-1/t", 1, []byte(`{"value": "x8"}`), ingest.ReasonMalformed, fmt.Errorf("x")))
	rl, err := newRefusedLog(e.store, config.RefusedLog{MaxEntries: 5, MaxBytes: conf.ByteSize(2*size + size/2)}, &RefusedStats{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.trim(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.store.Count(logs.Refused); n != 2 {
		t.Errorf("refused log holds %d entries after a restart with a bound of ~2 entries' bytes", n)
	}
}
