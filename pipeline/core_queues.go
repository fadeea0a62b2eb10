// The core's window state: keys and their windows, the fire and collection queues, and
// what emitting, forgetting and dropping a window does to them.

package pipeline

import (
	"slices"
	"strings"
)

func (c *Core) newKey(series string) *keyState {
	ks := &keyState{key: strings.Clone(series)}
	c.keys[ks.key] = ks
	return ks
}

// find returns the window of ks starting at start; recent windows are at the end.
func (ks *keyState) find(start int64) *window {
	for i := len(ks.wins) - 1; i >= 0; i-- {
		w := ks.wins[i]
		if w.start == start {
			return w
		}
		if w.start < start {
			return nil
		}
	}
	return nil
}

func (ks *keyState) insert(w *window) {
	i := len(ks.wins)
	for i > 0 && ks.wins[i-1].start > w.start {
		i--
	}
	ks.wins = slices.Insert(ks.wins, i, w)
}

func (ks *keyState) remove(w *window) {
	for i, o := range ks.wins {
		if o == w {
			ks.wins = slices.Delete(ks.wins, i, i+1)
			return
		}
	}
}

// newWindow opens [start, end) for ks. A window born after the watermark passed its end
// never fires ON_TIME: it goes straight to the collection queue.
func (c *Core) newWindow(ks *keyState, start, end int64, late bool) *window {
	var w *window
	if n := len(c.free); n > 0 {
		w = c.free[n-1]
		c.free = c.free[:n-1]
		*w = window{}
	} else {
		w = &window{}
	}
	w.ks, w.start, w.end = ks, start, end
	ks.insert(w)
	c.enqueue(w, late)
	return w
}

// dequeue takes w out of its queue.
func (c *Core) dequeue(w *window) {
	if w.fired {
		c.gcQ.remove(w.pos)
	} else {
		c.fireQ.remove(w.pos)
	}
}

func (c *Core) enqueue(w *window, fired bool) {
	w.fired = fired
	if fired {
		c.gcQ.push(w)
	} else {
		c.fireQ.push(w)
	}
}

// touch notes new data in w: it must be saved, and may fire early.
func (c *Core) touch(w *window) {
	w.changed = true
	if c.spec.Early > 0 && c.now != 0 && !w.fired && w.earlyAt == 0 {
		w.earlyAt = c.now + int64(c.spec.Early)
		c.earlyNext = min(c.earlyNext, w.earlyAt)
	}
	c.markDirty(w)
}

// Estimates of what saving one window and appending one pane cost in a transaction
// (beyond the key, which both carry).
const (
	stateBytes = 160
	paneBytes  = 400
)

func (c *Core) markDirty(w *window) {
	if c.trackDirty && !w.dirty {
		w.dirty = true
		c.dirty = append(c.dirty, w)
		c.dirtyBytes += stateBytes + len(w.ks.key)
	}
}

// emit fires a pane of w.
func (c *Core) emit(w *window, t Timing) {
	c.panes = append(c.panes, Pane{Key: w.ks.key, Start: w.start, End: w.end, Index: w.index, Timing: t, agg: w.agg})
	c.outBytes += paneBytes + 2*len(w.ks.key)
	w.index++
	w.changed = false
	w.earlyAt = 0
	if c.spec.Discarding {
		w.agg = aggState{}
	}
	c.markDirty(w)
	c.stats.Panes[t]++
}

// forget removes w from its queue and frees it; the caller removes it from its key.
func (c *Core) forget(w *window) {
	c.dequeue(w)
	c.release(w)
}

// release frees w (already out of its queue and its key's list).
func (c *Core) release(w *window) {
	if w.ks.cur == w {
		w.ks.cur = nil
	}
	if w.stored {
		c.tombs = append(c.tombs, tomb{w.ks, w.start, w.slot})
	}
	w.dirty = false // a stale entry in c.dirty is skipped
	w.ks = nil
	c.free = append(c.free, w)
}

// drop forgets a window past its end + allowed lateness.
func (c *Core) drop(w *window) {
	ks := w.ks
	ks.remove(w)
	c.release(w)
	if len(ks.wins) == 0 {
		delete(c.keys, ks.key)
	}
}
