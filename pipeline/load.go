// Loading a runner's state from the store: the meta, the windows of the last checkpoint that
// flipped, the cursor; and deleting what is stale (see state.go).

package pipeline

import (
	"context"
	"fmt"
	"strings"

	"github.com/edgegate/edgegate/buffer"
)

// load rebuilds the core from the store: meta, windows, cursor. It deletes what a
// checkpoint that never flipped wrote, and what a flipped one dropped but did not delete
// yet (see state.go).
func (r *Runner) load() error {
	r.dropReadAhead() // read for the position the runner leaves
	c, err := NewCore(r.spec)
	if err != nil {
		return err
	}
	c.trackDirty = true
	name := r.spec.Name
	saved, gen, err := r.loadMeta(c)
	if err != nil {
		return err
	}
	stale, err := r.loadWindows(c, saved, gen)
	if err != nil {
		return fmt.Errorf("pipeline %q: load state: %w", name, err)
	}
	if err := r.deleteState(stale); err != nil {
		return fmt.Errorf("pipeline %q: drop stale state: %w", name, err)
	}
	r.next, err = r.o.Store.Cursor(r.o.Input, r.consumer)
	if err != nil {
		return fmt.Errorf("pipeline %q: %w", name, err)
	}
	r.core = c
	r.lates, r.latesBytes = r.lates[:0], 0
	r.pos = r.next
	r.read.Store(r.pos)
	r.gen = gen
	r.saved = saved // a changed shape differs from c.meta(): the next step saves it
	r.base = r.committed
	r.lastCheckpoint = r.o.Clock.Now()
	r.sinceCheckpoint = 0
	r.stats.Position.Store(r.next)
	r.stats.Watermark.Store(c.wm)
	r.stats.OpenWindows.Store(int64(c.OpenWindows()))
	return nil
}

// loadMeta restores the saved meta into c, and returns it (c's own while none is saved:
// nothing to save while nothing happens) and the generation of the last flip.
func (r *Runner) loadMeta(c *Core) (saved meta, gen uint64, err error) {
	name := r.spec.Name
	saved = c.meta()
	if v, ok, err := r.o.Store.Get(r.metaKey); err != nil {
		return meta{}, 0, fmt.Errorf("pipeline %q: load state: %w", name, err)
	} else if ok {
		m, err := decodeMeta(v)
		if err != nil {
			return meta{}, 0, fmt.Errorf("pipeline %q: load state: meta: %w", name, err)
		}
		gen, m.gen = m.gen, 0
		c.restoreMeta(m)
		saved = m
		if m.shape != c.shape {
			r.lg.Warn("window shape changed since the last run: open windows are dropped; the watermark is kept")
		}
	}
	return saved, gen, nil
}

// loadWindows restores into c the windows of the last flip, generation gen, whose meta is
// saved, and returns the keys of the state KV to delete (see windowLoader).
func (r *Runner) loadWindows(c *Core, saved meta, gen uint64) (stale []string, err error) {
	l := windowLoader{r: r, c: c, saved: saved, gen: gen}
	if err := r.o.Store.ScanState(r.winPrefix, l.add); err != nil {
		return nil, err
	}
	l.resolve()
	return l.stale, nil
}

// windowLoader restores windows from a scan of the state KV, in key order: of each
// window's two slots, the newer one up to generation gen. It collects as stale the slots of
// a changed shape, those a checkpoint that did not flip wrote, the unreadable ones, and the
// windows a flipped checkpoint marked dropped.
type windowLoader struct {
	r     *Runner
	c     *Core
	saved meta
	gen   uint64
	stale []string
	// held is the slot to restore of the window being scanned. A window's two slots come
	// one after the other (slot 1's key extends slot 0's).
	held struct {
		base  string
		slot  uint8
		gen   uint64
		tomb  bool
		v     []byte
		valid bool
	}
}

// add takes the slot at key k of the scan.
func (l *windowLoader) add(k string, v []byte) error {
	held := &l.held
	if l.saved.shape != l.c.shape {
		l.stale = append(l.stale, k)
		return nil
	}
	base, slot := k, uint8(0)
	if b, ok := strings.CutSuffix(k, slotSuffix); ok {
		base, slot = b, 1
	}
	g, tomb, err := decodeSlot(v)
	if err != nil {
		l.r.lg.Error("unreadable window state dropped", "key", k, "err", err)
		l.stale = append(l.stale, k)
		return nil
	}
	if g > l.gen {
		l.stale = append(l.stale, k) // written by a checkpoint that did not flip
		return nil
	}
	if held.valid && held.base == base {
		if g < held.gen {
			return nil // superseded: the next checkpoint of the window overwrites it
		}
	} else {
		l.resolve()
	}
	held.base, held.slot, held.gen, held.tomb, held.valid = base, slot, g, tomb, true
	held.v = append(held.v[:0], v...)
	return nil
}

// resolve restores the window held, if any, or marks it stale when it is dropped or
// unreadable.
func (l *windowLoader) resolve() {
	held := &l.held
	if !held.valid {
		return
	}
	held.valid = false
	if held.tomb {
		l.stale = append(l.stale, held.base, held.base+slotSuffix)
		return
	}
	if err := l.c.restoreWindow(held.v, held.slot); err != nil {
		l.r.lg.Error("unreadable window state dropped", "key", held.base, "err", err)
		l.stale = append(l.stale, held.base, held.base+slotSuffix)
	}
}

// deleteState deletes keys of the state KV, in transactions of 1000.
func (r *Runner) deleteState(keys []string) error {
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		chunk := keys[:n]
		keys = keys[n:]
		err := r.o.Store.Update(context.Background(), func(tx *buffer.Tx) {
			for _, k := range chunk {
				tx.Delete(k)
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}
