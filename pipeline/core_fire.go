// Firing: what the watermark and processing time make due (ON_TIME, EARLY, collection),
// idle advance of the watermark, and the next deadline.

package pipeline

import "slices"

// Pending reports whether the watermark has made windows due that Fire has not handled.
func (c *Core) Pending() bool {
	return c.fireQ.len() > 0 && c.fireQ.top().end <= c.wm ||
		c.gcQ.len() > 0 && satAdd(c.gcQ.top().end, c.spec.AllowedLateness) <= c.wm
}

// Fire emits, in order, the ON_TIME panes of windows the watermark has passed, forgets
// windows past their allowed lateness, then emits due EARLY panes. max bounds the work (a
// pane or a forgotten window each count one; negative: no bound); it returns the work done.
func (c *Core) Fire(max int) int {
	n := 0
	for c.fireQ.len() > 0 && c.fireQ.top().end <= c.wm {
		if max >= 0 && n >= max {
			return n
		}
		w := c.fireQ.pop()
		c.emit(w, OnTime)
		n++
		if satAdd(w.end, c.spec.AllowedLateness) <= c.wm {
			c.drop(w)
		} else {
			c.enqueue(w, true)
		}
	}
	for c.gcQ.len() > 0 && satAdd(c.gcQ.top().end, c.spec.AllowedLateness) <= c.wm {
		if max >= 0 && n >= max {
			return n
		}
		c.drop(c.gcQ.pop())
		n++
	}
	if max >= 0 {
		return n + c.fireEarly(max-n)
	}
	return n + c.fireEarly(-1)
}

// fireEarly emits EARLY panes of open windows that changed and whose early time came.
func (c *Core) fireEarly(max int) int {
	if c.spec.Early <= 0 || c.now == 0 || c.now < c.earlyNext || max == 0 {
		return 0
	}
	due := c.scratch[:0]
	next := PosInf
	for _, w := range c.fireQ.ws {
		switch {
		case !w.changed || w.earlyAt == 0:
		case w.earlyAt <= c.now:
			due = append(due, w)
		default:
			next = min(next, w.earlyAt)
		}
	}
	slices.SortFunc(due, func(a, b *window) int {
		if fireOrder(a, b) {
			return -1
		}
		return 1
	})
	n := 0
	for _, w := range due {
		if max >= 0 && n >= max {
			next = c.now
			break
		}
		c.emit(w, Early)
		n++
	}
	clear(due)
	c.scratch = due[:0]
	c.earlyNext = next
	return n
}

// Tick sets processing time (Unix ns) for what follows. When the input has been idle for
// the spec's idle period, the watermark advances as if a record stamped now had arrived.
func (c *Core) Tick(now int64) {
	c.now = now
	if c.lastInput == 0 {
		c.lastInput = now // a (re)start gives devices a full idle period
	}
	if c.rearmEarly {
		c.rearmEarly = false
		for _, w := range c.fireQ.ws {
			if w.changed && w.earlyAt == 0 {
				w.earlyAt = now + int64(c.spec.Early)
				c.earlyNext = min(c.earlyNext, w.earlyAt)
			}
		}
	}
	if c.spec.Idle > 0 && now-c.lastInput >= int64(c.spec.Idle) {
		c.idleOn = true
		if ms := floorDiv(now, 1e6); ms > c.maxTS {
			c.maxTS = ms
		}
		if w := satAdd(c.maxTS, -c.spec.OutOfOrder); w > c.wm {
			c.wm = w
		}
	}
}

// NextDeadline returns the processing time (Unix ns) at which Tick and Fire next have
// something to do without new input: the input turning idle, the idle watermark reaching
// the next window end, or an early pane coming due.
func (c *Core) NextDeadline() (int64, bool) {
	d := PosInf
	if c.spec.Idle > 0 {
		if !c.idleOn {
			d = c.lastInput + int64(c.spec.Idle)
		} else {
			b := PosInf
			if c.fireQ.len() > 0 {
				b = c.fireQ.top().end
			}
			if c.gcQ.len() > 0 {
				b = min(b, satAdd(c.gcQ.top().end, c.spec.AllowedLateness))
			}
			if b != PosInf {
				// W = now − out_of_order reaches b at now = b + out_of_order.
				at := satAdd(b, c.spec.OutOfOrder)
				if at < PosInf/1e6 && at > NegInf/1e6 {
					d = min(d, at*1e6)
				}
			}
		}
	}
	if c.spec.Early > 0 {
		d = min(d, c.earlyNext)
	}
	return d, d != PosInf
}

// Finish advances the watermark to +∞ (end of replay input) and fires everything.
func (c *Core) Finish() {
	c.wm = PosInf
	c.Fire(-1)
}
