package board

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Upstream is the cloud: an MQTT broker (mochi, in this process) on the host's loopback,
// which the guest reaches at 10.0.2.2. It keeps every batch it receives, and can go down
// and come back on the same port.
type Upstream struct {
	Addr string

	mu      sync.Mutex // guards srv, batches, ids
	srv     *mqtt.Server
	batches map[string][][]byte // batch id → every payload received with it
	ids     map[string]Record   // record id → the record as last received
	order   []string            // batch ids in order of first arrival
}

// Batch is the SPEC §3.3 form.
type Batch struct {
	V       int               `json:"v"`
	Gateway string            `json:"gateway"`
	ID      string            `json:"batch"`
	Kind    string            `json:"kind"`
	Records []json.RawMessage `json:"records"`
}

// Record is the SPEC §3.1 form.
type Record struct {
	ID     string            `json:"id"`
	Topic  string            `json:"topic"`
	Series string            `json:"series"`
	TS     time.Time         `json:"ts"`
	Value  *float64          `json:"value"`
	Unit   string            `json:"unit"`
	Labels map[string]string `json:"labels"`
}

// NewUpstream picks a free port; Up starts the broker on it.
func NewUpstream() (*Upstream, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	return &Upstream{Addr: addr, batches: map[string][][]byte{}, ids: map[string]Record{}}, nil
}

// GuestURL is the broker's URL as the guest dials it.
func (u *Upstream) GuestURL() string {
	_, p, _ := net.SplitHostPort(u.Addr)
	return "tcp://" + GuestHost + ":" + p
}

// Up starts the broker; a no-op when it runs.
func (u *Upstream) Up() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.srv != nil {
		return nil
	}
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler), InlineClient: false})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	if err := srv.AddHook(&recordHook{u: u}, nil); err != nil {
		return err
	}
	var ln net.Listener
	var err error
	for range 100 { // the port of the previous run may take a moment to free
		if ln, err = net.Listen("tcp", u.Addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("upstream: listen on %s: %w", u.Addr, err)
	}
	if err := srv.AddListener(listeners.NewNet("up", ln)); err != nil {
		ln.Close()
		return err
	}
	if err := srv.Serve(); err != nil {
		return err
	}
	u.srv = srv
	return nil
}

// Down stops the broker and drops every connection; a no-op when it is down.
func (u *Upstream) Down() {
	u.mu.Lock()
	srv := u.srv
	u.srv = nil
	u.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// IsUp reports whether the broker runs.
func (u *Upstream) IsUp() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.srv != nil
}

func (u *Upstream) receive(payload []byte) {
	var b Batch
	if err := json.Unmarshal(payload, &b); err != nil || b.ID == "" {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, seen := u.batches[b.ID]; !seen {
		u.order = append(u.order, b.ID)
	}
	u.batches[b.ID] = append(u.batches[b.ID], append([]byte(nil), payload...))
	for _, raw := range b.Records {
		var r Record
		if json.Unmarshal(raw, &r) == nil {
			u.ids[r.ID] = r
		}
	}
}

// Has reports whether a record id arrived.
func (u *Upstream) Has(id string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.ids[id]
	return ok
}

// Missing returns the ids not received (at most max of them) and how many are missing.
func (u *Upstream) Missing(ids []string, max int) ([]string, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	n := 0
	for _, id := range ids {
		if _, ok := u.ids[id]; !ok {
			n++
			if len(out) < max {
				out = append(out, id)
			}
		}
	}
	return out, n
}

// Records returns the received records whose series has the prefix.
func (u *Upstream) Records(seriesPrefix string) []Record {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []Record
	for _, r := range u.ids {
		if strings.HasPrefix(r.Series, seriesPrefix) {
			out = append(out, r)
		}
	}
	return out
}

// Resends checks that every batch received more than once came with the same bytes each
// time: it returns how many batches were re-sent, and the ids of those whose bytes
// differed.
func (u *Upstream) Resends() (resent int, differing []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, id := range u.order {
		ps := u.batches[id]
		if len(ps) < 2 {
			continue
		}
		resent++
		for _, p := range ps[1:] {
			if string(p) != string(ps[0]) {
				differing = append(differing, id)
				break
			}
		}
	}
	return resent, differing
}

// Counts returns how many batches and distinct records arrived.
func (u *Upstream) Counts() (batches, records int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.batches), len(u.ids)
}

type recordHook struct {
	mqtt.HookBase
	u *Upstream
}

func (h *recordHook) ID() string           { return "board-upstream" }
func (h *recordHook) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *recordHook) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !strings.HasPrefix(pk.TopicName, "$") {
		h.u.receive(pk.Payload)
	}
	return pk, nil
}

// SNTP is a minimal NTP server (RFC 4330) on the host's loopback, port 123: the guest's
// systemd-timesyncd reaches it at 10.0.2.2 and steps the clock as it would after any NTP
// sync.
type SNTP struct {
	conn *net.UDPConn
	wg   sync.WaitGroup
}

const ntpEpochOffset = 2208988800 // seconds from 1900 to 1970

// StartSNTP listens on 127.0.0.1:123.
func StartSNTP() (*SNTP, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 123})
	if err != nil {
		return nil, fmt.Errorf("sntp: %w", err)
	}
	s := &SNTP{conn: c}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func ntpTime(t time.Time) uint64 {
	secs := uint64(t.Unix() + ntpEpochOffset)
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return secs<<32 | frac
}

func (s *SNTP) serve() {
	defer s.wg.Done()
	buf := make([]byte, 512)
	for {
		n, addr, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if n < 48 {
			continue
		}
		recv := time.Now()
		var r [48]byte
		r[0] = 0<<6 | 4<<3 | 4 // no leap warning, version 4, server
		r[1] = 1               // stratum 1
		r[2] = buf[2]          // poll
		r[3] = 0xEC            // precision 2^-20
		copy(r[12:16], "LOCL")
		binary.BigEndian.PutUint64(r[16:24], ntpTime(recv.Add(-time.Second))) // reference
		copy(r[24:32], buf[40:48])                                            // originate: the client's transmit
		binary.BigEndian.PutUint64(r[32:40], ntpTime(recv))
		binary.BigEndian.PutUint64(r[40:48], ntpTime(time.Now()))
		_, _ = s.conn.WriteToUDP(r[:], addr)
	}
}

// Close stops the server.
func (s *SNTP) Close() {
	s.conn.Close()
	s.wg.Wait()
}
