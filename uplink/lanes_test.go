package uplink

import (
	"math/rand/v2"
	"testing"
)

// TestLaneStateSequence walks one outage, a second outage during the drain, and the end of
// the drain, checking the cursor and ranges at each step.
func TestLaneStateSequence(t *testing.T) {
	var l laneState
	c := uint64(1)
	step := func(what string, wantCursor uint64, wantAcked [][2]uint64) {
		t.Helper()
		if c != wantCursor || len(l.Acked) != len(wantAcked) {
			t.Fatalf("%s: cursor %d acked %v; want %d %v", what, c, l.Acked, wantCursor, wantAcked)
		}
		for i := range wantAcked {
			if l.Acked[i] != wantAcked[i] {
				t.Fatalf("%s: acked %v, want %v", what, l.Acked, wantAcked)
			}
		}
	}
	// Normal flow: the head lane commits by moving the cursor.
	l.Pending = [][2]uint64{{1, 5}, {6, 10}}
	c = l.ackHead(c, 10)
	step("normal ack", 11, nil)

	// Outage: 11..1000 waits. A batch [11,20] was in flight; it becomes the backlog's.
	l.Pending = [][2]uint64{{11, 20}}
	if !l.split(1001) || l.Pending == nil || l.headPos(c) != 1001 {
		t.Fatalf("split: %+v", l)
	}
	step("split", 11, [][2]uint64{{1001, 1001}})

	// Fresh data acks ahead of the backlog.
	l.FreshPending = [][2]uint64{{1001, 1005}}
	c = l.ackHead(c, 1005)
	step("fresh ack", 11, [][2]uint64{{1001, 1006}})
	c = l.ackBacklog(20)
	step("backlog ack", 21, [][2]uint64{{1001, 1006}})
	if l.backlogEnd() != 1001 || l.ackedAbove() != 5 {
		t.Fatalf("backlog end %d, acked above %d", l.backlogEnd(), l.ackedAbove())
	}

	// A second outage while draining: a new range starts at the end of the log.
	if !l.split(2001) {
		t.Fatal("second split refused")
	}
	step("second split", 21, [][2]uint64{{1001, 1006}, {2001, 2001}})
	c = l.ackHead(c, 2009)
	step("fresh ack after second split", 21, [][2]uint64{{1001, 1006}, {2001, 2010}})

	// The backlog reaches the first range: it folds into the cursor; the backlog goes on
	// in the gap [1006, 2001).
	c = l.ackBacklog(1000)
	step("fold first range", 1006, [][2]uint64{{2001, 2010}})
	if l.backlogEnd() != 2001 {
		t.Fatalf("backlog end %d, want 2001", l.backlogEnd())
	}

	// The head lane has a batch in flight when the drain ends: it becomes the only lane's.
	l.FreshPending = [][2]uint64{{2010, 2015}, {2016, 2020}}
	c = l.ackBacklog(2000)
	step("drain over", 2010, nil)
	if l.draining() || len(l.Pending) != 2 || l.Pending[0] != [2]uint64{2010, 2015} || l.FreshPending != nil {
		t.Fatalf("after the drain: %+v", l)
	}
	c = l.ackHead(c, 2015)
	step("normal again", 2016, nil)
	if len(l.Pending) != 1 || l.Pending[0] != [2]uint64{2016, 2020} {
		t.Fatalf("acknowledging the first of two batches in flight left %v", l.Pending)
	}
}

// TestLaneStateNeverLosesAnEntry drives random splits and acks over a log and checks that
// every entry is acknowledged exactly when it was sent by some lane, and that the cursor
// never passes an entry no lane acknowledged.
func TestLaneStateNeverLosesAnEntry(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		var l laneState
		c := uint64(1)
		end := uint64(1) // entries [1, end) exist
		sent := map[uint64]bool{}
		for range 300 {
			end += uint64(rng.IntN(20))
			switch rng.IntN(3) {
			case 0: // the head lane sends what it can
				h := l.headPos(c)
				if h < end {
					last := min(end-1, h+uint64(rng.IntN(10)))
					for q := h; q <= last; q++ {
						sent[q] = true
					}
					c = l.ackHead(c, last)
				}
			case 1: // the backlog lane sends
				if l.draining() {
					last := min(l.backlogEnd()-1, c+uint64(rng.IntN(30)))
					for q := c; q <= last; q++ {
						sent[q] = true
					}
					c = l.ackBacklog(last)
				}
			case 2: // reconnect
				if h := l.headPos(c); end > h+5 {
					l.split(end)
				}
			}
			for q := uint64(1); q < c; q++ {
				if !sent[q] {
					t.Fatalf("seed %d: cursor %d passed entry %d that was never sent (ranges %v)", seed, c, q, l.Acked)
				}
			}
			for _, r := range l.Acked {
				for q := r[0]; q < r[1]; q++ {
					if !sent[q] {
						t.Fatalf("seed %d: range %v claims unsent entry %d", seed, r, q)
					}
				}
			}
			if len(l.Acked) > maxRanges {
				t.Fatalf("seed %d: %d ranges", seed, len(l.Acked))
			}
			back, err := decodeLanes(l.encode(), c)
			if err != nil || len(back.Acked) != len(l.Acked) {
				t.Fatalf("seed %d: round trip: %v %+v", seed, err, back)
			}
		}
	}
}

// FuzzDecodeLanes: whatever bytes the lane-state key holds (a damaged or hand-edited store),
// decoding never panics, and what it accepts is well formed above the cursor and survives a
// round trip.
func FuzzDecodeLanes(f *testing.F) {
	f.Add([]byte(`{"acked":[[1001,1006],[2001,2010]],"pending":[[21,30]],"fresh_pending":[[2010,2015]]}`), uint64(21))
	f.Add([]byte(`{"pending":[[1,5],[6,10]]}`), uint64(1))
	f.Add([]byte(`{"acked":[[5,3]]}`), uint64(1))
	f.Add([]byte(``), uint64(0))
	f.Fuzz(func(t *testing.T, v []byte, cursor uint64) {
		l, err := decodeLanes(v, cursor)
		if err != nil {
			return
		}
		for i, r := range l.Acked {
			if r[0] > r[1] || r[0] < cursor || i > 0 && r[0] < l.Acked[i-1][1] {
				t.Fatalf("accepted bad ranges %v above cursor %d", l.Acked, cursor)
			}
		}
		back, err := decodeLanes(l.encode(), cursor)
		if err != nil || string(back.encode()) != string(l.encode()) {
			t.Fatalf("round trip: %v: %s vs %s", err, back.encode(), l.encode())
		}
	})
}
