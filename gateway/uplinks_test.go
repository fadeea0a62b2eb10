package gateway_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/uplink"
)

// TestCrashBetweenSendAndAck: the upstream receives a batch but withholds its PUBACK; the
// gateway (a child process) is killed with SIGKILL while it waits for the ack. After a
// restart the very same batch — same id, same bytes — is sent first.
func TestCrashBetweenSendAndAck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	up := testutil.StartUpstream(t)
	up.Withhold.Store(true)
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	path := writeConfig(t, dir, addr, fmt.Sprintf(`
uplinks:
  - {name: cloud, type: mqtt, url: %q, batch: {linger: 50ms, max_records: 10}}
`, up.URL()))
	startChild := func() *exec.Cmd {
		cmd := testutil.SelfCommand("-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+path)
		cmd.Stderr = testWriter{t}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	cmd := startChild()
	var c paho.Client
	testutil.Eventually(t, 10*time.Second, "child broker up", func() bool {
		c = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("dev").SetAutoReconnect(false))
		tok := c.Connect()
		return tok.WaitTimeout(time.Second) && tok.Error() == nil
	})
	for i := range 25 {
		publish(t, c, "devices/d1/temperature", 1, fmt.Sprintf(`{"value": %d, "id": "k:%03d"}`, i, i))
	}
	c.Disconnect(0)
	testutil.Eventually(t, 10*time.Second, "a batch upstream, unacknowledged", func() bool { return len(up.Messages()) >= 1 })
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	before := up.Messages()[0]
	b0, _ := testutil.DecodeBatch(t, before.Payload)

	up.Withhold.Store(false)
	n := len(up.Messages())
	cmd = startChild()
	defer func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() }()
	testutil.Eventually(t, 15*time.Second, "the batch again after the restart", func() bool { return len(up.Messages()) > n })
	after := up.Messages()[n]
	b1, recs := testutil.DecodeBatch(t, after.Payload)
	if b1.Batch != b0.Batch || !bytes.Equal(before.Payload, after.Payload) {
		t.Fatalf("first batch after the restart differs:\nbefore %s\nafter  %s", before.Payload, after.Payload)
	}
	t.Logf("batch %s (%d records) re-sent identically after SIGKILL", b1.Batch, len(recs))
	testutil.Eventually(t, 15*time.Second, "all 25 records upstream", func() bool {
		return len(byID(upstreamRecords(t, up.Messages()[n:]))) == 25
	})
}

// TestOutage: under a steady 200 msg/s load, the upstream goes away for 30 s and comes
// back. Every acknowledged reading arrives; the only duplicates are resent batches with the
// same id and bytes; the outage shows in the uplink's status (backing off, errors, backlog,
// oldest unsent age).
func TestOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 40 s")
	}
	up := testutil.StartUpstream(t)
	path := writeConfig(t, t.TempDir(), "127.0.0.1:0", fmt.Sprintf(`
uplinks:
  - {name: cloud, type: mqtt, url: %q, timeout: 2s, max_rate: 2000, batch: {linger: 100ms}, backoff: {min: 100ms, max: 2s}}
`, up.URL()))
	r := start(t, path, clock.Real{})
	u := r.g.Uplinks()[0]
	c := testutil.Paho(t, r.g.BrokerAddrs()[0], "steady")

	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond) // 200 msg/s
		defer tick.Stop()
		for i := 0; !stop.Load(); i++ {
			<-tick.C
			id := fmt.Sprintf("o:%06d", i)
			tok := c.Publish("devices/d1/temperature", 1, false, fmt.Sprintf(`{"value": %d, "id": %q}`, i, id))
			go func() {
				if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				}
			}()
		}
	}()

	time.Sleep(3 * time.Second)
	up.Stop()
	outageStart := time.Now()
	var sawBackoff, sawBacklog bool
	var worst uplink.Status
	for time.Since(outageStart) < 30*time.Second {
		st := u.Status()
		sawBackoff = sawBackoff || st.BackingOff
		if st.Backlog > worst.Backlog {
			worst = st
		}
		sawBacklog = sawBacklog || (st.Backlog > 1000 && st.OldestUnsentAge > 5*time.Second)
		time.Sleep(200 * time.Millisecond)
	}
	up.Start(t)
	time.Sleep(3 * time.Second)
	stop.Store(true)
	wg.Wait()
	time.Sleep(100 * time.Millisecond)

	mu.Lock()
	want := len(acked)
	mu.Unlock()
	testutil.Eventually(t, 60*time.Second, "every acknowledged reading upstream", func() bool {
		ids := byID(upstreamRecords(t, up.Messages()))
		mu.Lock()
		defer mu.Unlock()
		for id := range acked {
			if _, ok := ids[id]; !ok {
				return false
			}
		}
		return true
	})
	st := u.Status()
	if !sawBackoff || !sawBacklog || st.Errors == 0 || st.Backoffs == 0 || st.LastError == "" {
		t.Errorf("the outage did not show in the status: saw backoff %v, backlog %v; worst %+v; now %+v", sawBackoff, sawBacklog, worst, st)
	}
	// Duplicates only as whole resent batches, with the same id and bytes.
	seen := map[string][]byte{}
	for _, m := range up.Messages() {
		b, _ := testutil.DecodeBatch(t, m.Payload)
		if prev, ok := seen[b.Batch]; ok && !bytes.Equal(prev, m.Payload) {
			t.Fatalf("batch %s resent with other content", b.Batch)
		}
		seen[b.Batch] = m.Payload
	}
	counts := map[string]int{}
	for _, rec := range upstreamRecords(t, up.Messages()) {
		counts[rec.ID]++
	}
	dups := 0
	for _, n := range counts {
		dups += n - 1
	}
	t.Logf("%d readings acknowledged over a 30 s outage, all delivered; %d duplicate deliveries, all in resent batches; worst backlog %d, oldest unsent %s; %d backoffs",
		want, dups, worst.Backlog, worst.OldestUnsentAge.Round(time.Second), st.Backoffs)
}

// TestStuckUplinkBlocksNothing: one uplink's upstream takes batches but never acknowledges
// them; another uplink, with its own forward filter, and the devices carry on regardless.
func TestStuckUplinkBlocksNothing(t *testing.T) {
	stuck := testutil.StartUpstream(t)
	stuck.Withhold.Store(true)
	good := testutil.StartUpstream(t)
	path := writeConfig(t, t.TempDir(), "127.0.0.1:0", fmt.Sprintf(`
uplinks:
  - {name: stuck, type: mqtt, url: %q, timeout: 1s, batch: {linger: 20ms}, backoff: {min: 50ms, max: 200ms}}
  - {name: good, type: mqtt, url: %q, forward: ["devices/+/temperature"], batch: {linger: 20ms}}
`, stuck.URL(), good.URL()))
	r := start(t, path, clock.Real{})
	c := testutil.Paho(t, r.g.BrokerAddrs()[0], "dev")
	for i := range 200 {
		publish(t, c, "devices/d1/temperature", 1, fmt.Sprintf(`{"value": %d, "id": "t:%03d"}`, i, i))
		publish(t, c, "devices/d1/humidity", 1, fmt.Sprintf(`{"value": %d, "id": "h:%03d"}`, i, i))
	}
	testutil.Eventually(t, 15*time.Second, "200 temperatures at the good upstream", func() bool {
		return len(byID(upstreamRecords(t, good.Messages()))) == 200
	})
	for _, rec := range upstreamRecords(t, good.Messages()) {
		if rec.Series != "d1/temperature" {
			t.Fatalf("the good uplink forwarded %s despite its filter", rec.Series)
		}
	}
	var stuckU *uplink.Uplink
	for _, u := range r.g.Uplinks() {
		if u.Name() == "stuck" {
			stuckU = u
		}
	}
	testutil.Eventually(t, 10*time.Second, "the stuck uplink's ack timeout", func() bool { return stuckU.Status().Errors > 0 })
	if st := stuckU.Status(); st.Records != 0 || st.Backlog != 400 {
		t.Errorf("stuck uplink status: %+v", st)
	}
}
