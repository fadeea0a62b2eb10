// Assigning a record to its windows: the fixed windows of tumbling and sliding specs, and
// the sessions that merge as records bridge their gaps.

package pipeline

// addTo adds in to the window [start, end) of its key (tumbling and sliding).
func (c *Core) addTo(ksp **keyState, in *Input, start, end, w0 int64) Outcome {
	late := end <= w0
	if late && satAdd(end, c.spec.AllowedLateness) <= w0 {
		return TooLate
	}
	ks := *ksp
	var w *window
	if ks != nil {
		if w = ks.cur; w == nil || w.start != start {
			w = ks.find(start)
		}
	}
	if w == nil {
		if c.OpenWindows() >= c.spec.MaxOpenWindows {
			return Capped
		}
		if ks == nil {
			ks = c.newKey(in.Series)
			*ksp = ks
		}
		w = c.newWindow(ks, start, end, late)
	}
	ks.cur = w
	w.agg.add(in.Value, in.TS, c.arrival)
	c.touch(w)
	if late {
		c.emit(w, Late)
		return LateAccepted
	}
	return Aggregated
}

// addSession adds in to its key's sessions: its proto-window [ts, ts+gap) merges with
// every session it overlaps. A merge that changes a session's bounds makes a new window,
// whose panes count from 0 again (its id differs from the old one's by its bounds).
func (c *Core) addSession(ksp **keyState, in *Input, w0 int64) Outcome {
	ts := in.TS
	pEnd := ts + c.spec.Gap
	if pEnd <= w0 && satAdd(pEnd, c.spec.AllowedLateness) <= w0 {
		return TooLate
	}
	ks := *ksp
	i, j := 0, 0
	if ks != nil {
		for i < len(ks.wins) && ks.wins[i].end <= ts {
			i++
		}
		j = i
		for j < len(ks.wins) && ks.wins[j].start < pEnd {
			j++
		}
	}
	var w *window
	if i == j {
		if c.OpenWindows() >= c.spec.MaxOpenWindows {
			return Capped
		}
		if ks == nil {
			ks = c.newKey(in.Series)
			*ksp = ks
		}
		w = c.newWindow(ks, ts, pEnd, pEnd <= w0)
	} else {
		w = ks.wins[i]
		start, end := min(w.start, ts), max(ks.wins[j-1].end, pEnd)
		if j > i+1 {
			for _, o := range ks.wins[i+1 : j] {
				w.agg.merge(&o.agg)
				c.forget(o)
			}
			n := copy(ks.wins[i+1:], ks.wins[j:])
			clear(ks.wins[i+1+n:])
			ks.wins = ks.wins[:i+1+n]
		}
		if start != w.start || end != w.end {
			if start != w.start && w.stored {
				c.tombs = append(c.tombs, tomb{ks, w.start, w.slot})
				w.stored = false
			}
			w.start, w.end, w.index = start, end, 0
			c.dequeue(w)
			w.earlyAt = 0
			c.enqueue(w, end <= w0)
		}
	}
	w.agg.add(in.Value, ts, c.arrival)
	c.touch(w)
	if w.end <= w0 {
		c.emit(w, Late)
		return LateAccepted
	}
	return Aggregated
}
