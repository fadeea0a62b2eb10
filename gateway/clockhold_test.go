package gateway_test

import (
	"bufio"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/gatewaytest"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/internal/timesync"
	"github.com/edgegate/edgegate/record"
)

type syncSource struct{ synced atomic.Bool }

func (s *syncSource) Synced() (bool, error) { return s.synced.Load(), nil }

type monoClock struct{ d atomic.Int64 }

func (m *monoClock) now() time.Duration      { return time.Duration(m.d.Load()) }
func (m *monoClock) advance(d time.Duration) { m.d.Add(int64(d)) }

var (
	buildFloor = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	trueTime   = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
)

// runWithKeeper runs a gateway on cfgPath with a fake wall clock and the given keeper.
func runWithKeeper(t *testing.T, cfgPath string, wall clock.Clock, k *timesync.Keeper) (*gateway.Gateway, func()) {
	t.Helper()
	cfg, err := gatewaytest.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r := gatewaytest.Start(t, cfg, gateway.Options{Logger: testLogger(t), Clock: wall,
		FlushTimeout: 2 * time.Second, TimeKeeper: k})
	return r.G, func() {
		if err := r.Stop(); err != nil {
			t.Errorf("gateway stopped with error: %v", err)
		}
	}
}

// archiveConfig writes a config whose one uplink, a file, sends every record at once; it
// returns the config's path, the uplink's file and the broker's address.
func archiveConfig(t *testing.T) (path, out, broker string) {
	t.Helper()
	dir := t.TempDir()
	out = filepath.Join(dir, "up.jsonl")
	broker = testutil.FreeAddr(t)
	path = writeConfig(t, dir, broker, `
uplinks:
  - {name: archive, type: file, path: `+out+`, batch: {max_records: 1}}
`)
	return path, out, broker
}

// fileRecords reads every record of a file uplink.
func fileRecords(t *testing.T, path string) []record.Record {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []record.Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		_, recs := testutil.DecodeBatch(t, sc.Bytes())
		out = append(out, recs...)
	}
	return out
}

func findValue(recs []record.Record, v float64) *record.Record {
	for i := range recs {
		if recs[i].Value == v {
			return &recs[i]
		}
	}
	return nil
}

// TestClockHeldThenCorrected: a board boots at 1970 (no RTC, no NTP yet). A reading without
// ts is held, not sent with a 1970 date; a reading with the device's own ts flows at once.
// When NTP steps the clock, the held reading is rewritten to its true time (boot start +
// monotonic time) and sent, with the id a reading of that time has.
//
// The keeper reads the board's two clocks, wall and monotonic, one after the other: the
// test moves them only while the keeper cannot sync (its source says unsynchronised), and
// leaves them still once it can, so whenever the holder checks, it reads a consistent
// pair. The gateway's own clock (arrival stamps, timers) is a separate fake that the test
// advances to wake the holder. Moving both keeper clocks while the holder checked gave it
// a torn pair, and a correction one second off, on a loaded machine.
func TestClockHeldThenCorrected(t *testing.T) {
	path, out, broker := archiveConfig(t)
	src := &syncSource{}
	mono := &monoClock{}
	mono.advance(3 * time.Second)                 // the kernel booted 3 s ago
	kwall := clock.NewFake(time.Unix(3, 0).UTC()) // the wall clock as the keeper reads it
	wall := clock.NewFake(time.Unix(3, 0).UTC())  // the same, for the gateway
	k, err := timesync.New(timesync.Options{Floor: buildFloor, Source: src, Mono: mono.now, Boot: "boot-1", Clock: kwall})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := runWithKeeper(t, path, wall, k)

	// 10 s after boot (true time: trueTime), two readings arrive.
	mono.advance(7 * time.Second)
	kwall.Advance(7 * time.Second)
	wall.Advance(7 * time.Second)
	c := testutil.Paho(t, broker, "clock-pub")
	publish(t, c, "devices/d1/temperature", 1, `{"value": 1}`)
	publish(t, c, "devices/d1/temperature", 1, `{"value": 2, "ts": "2026-11-26T11:00:00Z"}`)
	testutil.Eventually(t, 30*time.Second, "the device-stamped reading upstream", func() bool {
		return findValue(fileRecords(t, out), 2) != nil
	})
	if r := findValue(fileRecords(t, out), 1); r != nil {
		t.Fatalf("a reading stamped by an unsynchronised clock was sent: %+v", r)
	}
	st := g.Status().Clock
	if st.Synced || st.State != timesync.StateWaiting || st.Held != 1 {
		t.Fatalf("clock status while waiting: %+v", st)
	}

	// 30 s after boot NTP steps the clock to the true time: the keeper's clocks first,
	// then its source says synchronised. A check before that is not synced; a check
	// after it reads the new pair (a check that reads the new wall time reads the new
	// monotonic time too: it was set before).
	mono.advance(20 * time.Second)
	kwall.Set(trueTime.Add(20 * time.Second))
	src.synced.Store(true)
	wall.Set(trueTime.Add(20 * time.Second))
	testutil.Eventually(t, 30*time.Second, "the held reading upstream", func() bool {
		wall.Advance(time.Second) // the holder checks the clock every second
		return findValue(fileRecords(t, out), 1) != nil
	})
	r := findValue(fileRecords(t, out), 1)
	if !r.TS.Equal(trueTime) {
		t.Errorf("held reading sent with ts %v, want %v", r.TS, trueTime)
	}
	if want := record.HashID("d1/temperature", trueTime, 1); r.ID != want {
		t.Errorf("id %s, want %s (the id of a reading at its true time)", r.ID, want)
	}
	if _, flagged := r.Labels[gateway.UnsyncedLabel]; flagged {
		t.Error("a corrected reading is flagged")
	}
	testutil.Eventually(t, 30*time.Second, "the status to settle", func() bool {
		st = g.Status().Clock
		return st.Held == 0 && st.Corrected == 1
	})
	if !st.Synced || st.Uncorrected != 0 {
		t.Errorf("clock status after sync: %+v", st)
	}
}

// TestClockUncorrectableFlagged: readings held in a boot that never synced cannot be
// corrected; the next boot releases them labelled clock=unsynced and dated no earlier than
// the build, never 1970.
func TestClockUncorrectableFlagged(t *testing.T) {
	path, out, broker := archiveConfig(t)
	newKeeper := func(boot string, wall clock.Clock) *timesync.Keeper {
		mono := &monoClock{}
		mono.advance(5 * time.Second)
		k, err := timesync.New(timesync.Options{Floor: buildFloor, Source: &syncSource{}, Mono: mono.now, Boot: boot, Clock: wall})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	wall := clock.NewFake(time.Unix(5, 0).UTC())
	_, stop := runWithKeeper(t, path, wall, newKeeper("boot-1", wall))
	c := testutil.Paho(t, broker, "clock-pub-1")
	publish(t, c, "devices/d1/temperature", 1, `{"value": 7}`)
	c.Disconnect(0)
	stop() // power lost before any sync

	wall2 := clock.NewFake(time.Unix(5, 0).UTC())
	g, _ := runWithKeeper(t, path, wall2, newKeeper("boot-2", wall2))
	testutil.Eventually(t, 10*time.Second, "the reading of the unsynced boot upstream", func() bool {
		wall2.Advance(time.Second)
		return findValue(fileRecords(t, out), 7) != nil
	})
	r := findValue(fileRecords(t, out), 7)
	if r.Labels[gateway.UnsyncedLabel] != "unsynced" {
		t.Errorf("labels %v: want clock=unsynced", r.Labels)
	}
	if !r.TS.Equal(buildFloor) {
		t.Errorf("ts %v, want the build floor %v (never 1970)", r.TS, buildFloor)
	}
	if st := g.Status().Clock; st.Uncorrected != 1 || st.State != timesync.StateWaiting {
		t.Errorf("clock status: %+v", st)
	}
}
