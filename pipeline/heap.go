package pipeline

// winHeap is a binary min-heap of windows that keeps each window's position in
// window.pos, so a window can be removed (session merges). A window is in at
// most one heap: the firing queue while open, the collection queue once fired.
type winHeap struct {
	ws   []*window
	less func(a, b *window) bool
}

func (h *winHeap) len() int { return len(h.ws) }

func (h *winHeap) top() *window { return h.ws[0] }

func (h *winHeap) push(w *window) {
	w.pos = len(h.ws)
	h.ws = append(h.ws, w)
	h.up(w.pos)
}

func (h *winHeap) pop() *window {
	return h.remove(0)
}

func (h *winHeap) remove(i int) *window {
	w := h.ws[i]
	n := len(h.ws) - 1
	if i != n {
		h.swap(i, n)
	}
	h.ws[n] = nil
	h.ws = h.ws[:n]
	if i != n {
		if !h.down(i) {
			h.up(i)
		}
	}
	w.pos = -1
	return w
}

func (h *winHeap) swap(i, j int) {
	h.ws[i], h.ws[j] = h.ws[j], h.ws[i]
	h.ws[i].pos = i
	h.ws[j].pos = j
}

func (h *winHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(h.ws[j], h.ws[i]) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

func (h *winHeap) down(i0 int) bool {
	i, n := i0, len(h.ws)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && h.less(h.ws[r], h.ws[l]) {
			j = r
		}
		if !h.less(h.ws[j], h.ws[i]) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}

// fireOrder is the order ON_TIME panes fire in when one watermark move closes several
// windows: by end, then key, then start. Deterministic, so replay and the daemon agree.
func fireOrder(a, b *window) bool {
	if a.end != b.end {
		return a.end < b.end
	}
	if a.ks.key != b.ks.key {
		return a.ks.key < b.ks.key
	}
	return a.start < b.start
}

// gcOrder orders fired windows by the time they can be forgotten (end + allowed lateness,
// the same lateness for all).
func gcOrder(a, b *window) bool { return a.end < b.end }
