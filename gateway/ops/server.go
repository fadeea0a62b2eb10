// Package ops is edgegate's operations surface (SPEC §6): an HTTP server with Prometheus
// metrics, health and readiness probes, a JSON status and a self-contained status page.
// Components report through small interfaces; this package knows none of them.
package ops

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/edgegate/edgegate/internal/bindhint"
	"github.com/edgegate/edgegate/internal/clock"
)

//go:embed page.html
var page []byte

// Source is what the server reports on: a snapshot of the whole gateway, its readiness
// checks, and the ingest records counter (Status().Ingest.Records) alone, which the server
// samples every SampleEvery for the rate and so must cost no more than an atomic load. All
// are called on the server's goroutines and must be safe for concurrent use and quick.
type Source interface {
	Status() Status
	Checks() []Check
	IngestedRecords() uint64
}

// Options configure a Server.
type Options struct {
	// Listen is the TCP address, e.g. 127.0.0.1:9464.
	Listen   string
	Registry *Registry
	Source   Source
	Clock    clock.Clock
	Logger   *slog.Logger
	// SampleEvery is the period of the rate samples behind records_per_s (default 2 s).
	SampleEvery time.Duration
	// AllowedHosts are the host names requests may name in their Host header (default
	// ["localhost"]); IP address literals are always accepted. Other names get 421: a web
	// page whose name rebinds to this board must not read it from a browser.
	AllowedHosts []string
}

// Server is the ops HTTP server.
type Server struct {
	opts Options
	log  *slog.Logger
	ln   net.Listener
	srv  *http.Server
	rate rateWindow

	errMu   sync.Mutex // guards lastErr
	lastErr time.Time
}

// New builds a server; it binds nothing until Listen.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.SampleEvery <= 0 {
		opts.SampleEvery = 2 * time.Second
	}
	if opts.Registry == nil {
		opts.Registry = NewRegistry()
	}
	if opts.AllowedHosts == nil {
		opts.AllowedHosts = []string{"localhost"}
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "ops")}
	s.rate.keep = 6
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s
}

// SetSource sets what the server reports on; call it before Run when the source is built
// after the server (the port is bound first so a conflict fails the start early).
func (s *Server) SetSource(src Source) { s.opts.Source = src }

// Listen binds the address, so that a port conflict stops the daemon at start.
func (s *Server) Listen() error {
	ln, err := bindhint.Listen(bindhint.Listener{What: "ops", Key: "ops.listen", Addr: s.opts.Listen})
	if err != nil {
		return err // names the listener, the address and the fix
	}
	s.ln = ln
	return nil
}

// Close releases the address of a server bound but never run (Run releases it when it
// returns). Idempotent.
func (s *Server) Close() error {
	if s.ln == nil {
		return nil
	}
	if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("ops: close %s: %w", s.opts.Listen, err)
	}
	return nil
}

// Addr is the bound address (valid after Listen).
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Run serves until ctx ends, then shuts the server down (bounded to 2 s). It calls Listen
// first if that was not done.
func (s *Server) Run(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.log.Info("ops http listening", "address", s.Addr())
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	s.sample()
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := s.srv.Shutdown(sctx)
			cancel()
			if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
				err = serr
			}
			return err
		case err := <-errc:
			return fmt.Errorf("ops: serve: %w", err)
		case <-s.opts.Clock.After(s.opts.SampleEvery):
			s.sample()
		}
	}
}

func (s *Server) sample() {
	s.rate.add(s.opts.Clock.Now(), s.opts.Source.IngestedRecords())
}

// Handler returns the ops routes: / (status page), /metrics, /healthz, /readyz, /status.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.servePage)
	mux.HandleFunc("GET /metrics", s.serveMetrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		noStore(w)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.serveReady)
	mux.HandleFunc("GET /status", s.serveStatus)
	return s.checkHost(mux)
}

// checkHost refuses requests whose Host header names a host that is neither an IP address
// nor one of AllowedHosts (DNS rebinding: a page of evil.example whose name now resolves
// to this board is same-origin with it for the browser, but its requests say
// Host: evil.example).
func (s *Server) checkHost(next http.Handler) http.Handler {
	allowed := make(map[string]bool, len(s.opts.AllowedHosts))
	for _, h := range s.opts.AllowedHosts {
		allowed[strings.ToLower(h)] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
		if _, err := netip.ParseAddr(host); err != nil && !allowed[host] {
			noStore(w)
			http.Error(w, fmt.Sprintf("host %q is not in ops.allowed_hosts", r.Host), http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
}

func (s *Server) servePage(w http.ResponseWriter, _ *http.Request) {
	noStore(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// The page is one file: inline script and style, data from /status, nothing else.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	w.Write(page)
}

func (s *Server) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	noStore(w)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	if err := s.opts.Registry.Write(w); err != nil {
		s.logLimited("metrics scrape incomplete", err)
	}
}

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	noStore(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	checks := s.opts.Source.Checks()
	var b strings.Builder
	for _, c := range checks {
		mark := "ok"
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "%s %s", mark, c.Name)
		if c.Detail != "" {
			fmt.Fprintf(&b, ": %s", c.Detail)
		}
		b.WriteByte('\n')
	}
	if !Ready(checks) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	w.Write([]byte(b.String()))
}

func (s *Server) serveStatus(w http.ResponseWriter, _ *http.Request) {
	noStore(w)
	st := s.Status()
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(st); err != nil {
		s.logLimited("encode status", err)
	}
}

// Status is the source's status with the readiness checks and rates filled in.
func (s *Server) Status() Status {
	st := s.opts.Source.Status()
	st.Checks = s.opts.Source.Checks()
	st.Ready = Ready(st.Checks)
	st.Ingest.RecordsPerS = s.rate.perSecond(s.opts.Clock.Now(), st.Ingest.Records)
	return st
}

func (s *Server) logLimited(msg string, err error) {
	now := s.opts.Clock.Now()
	s.errMu.Lock()
	skip := now.Sub(s.lastErr) < time.Minute
	if !skip {
		s.lastErr = now
	}
	s.errMu.Unlock()
	if !skip {
		s.log.Warn(msg, "err", err)
	}
}

// rateWindow turns a growing counter into a rate over its last few samples.
type rateWindow struct {
	mu   sync.Mutex // guards pts
	keep int
	pts  []ratePoint
}

type ratePoint struct {
	t time.Time
	v uint64
}

func (r *rateWindow) add(t time.Time, v uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.pts); n > 0 && v < r.pts[n-1].v {
		r.pts = r.pts[:0] // the counter was reset
	}
	r.pts = append(r.pts, ratePoint{t, v})
	if len(r.pts) > r.keep {
		r.pts = append(r.pts[:0], r.pts[len(r.pts)-r.keep:]...)
	}
}

// perSecond is the rate between the oldest kept sample and (now, v).
func (r *rateWindow) perSecond(now time.Time, v uint64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pts) == 0 {
		return 0
	}
	p := r.pts[0]
	dt := now.Sub(p.t).Seconds()
	if dt <= 0 || v < p.v {
		return 0
	}
	return float64(v-p.v) / dt
}
