package httpsink_test

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/httpsink"
	"github.com/edgegate/edgegate/uplink/sinktest"
)

var discard = slog.New(slog.DiscardHandler)

// newSink builds the http sink of an uplink posting to url, with timeout per send.
func newSink(t *testing.T, url string, timeout time.Duration) uplink.Sink {
	t.Helper()
	cfg := &uplink.Config{Name: "c", Type: "http"}
	cfg.SetDefaults()
	cfg.Timeout = conf.Duration(timeout)
	sc := httpsink.Type().NewConfig().(*httpsink.Config)
	sc.URL = url
	cfg.Sink = sc
	s, err := httpsink.New(cfg, "gw", discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// collector is an upstream that keeps the ids of the records of every batch it accepts.
type collector struct {
	mu  sync.Mutex
	ids []string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ids, err := sinktest.PayloadIDs(data)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.ids = append(c.ids, ids...)
	c.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (c *collector) received() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ids...)
}

// TestContract: the http sink keeps uplink.Sink's promises against a real HTTP server: a
// collector, nothing listening, a server that never answers, one that answers 422.
func TestContract(t *testing.T) {
	sinktest.Run(t, sinktest.Harness{
		Up: func(t *testing.T) (uplink.Sink, func() []string) {
			c := &collector{}
			srv := httptest.NewServer(c)
			t.Cleanup(srv.Close)
			return newSink(t, srv.URL+"/in/{gateway}/{kind}", 30*time.Second), c.received
		},
		Unreachable: func(t *testing.T) uplink.Sink {
			return newSink(t, "http://"+testutil.FreeAddr(t)+"/in", 30*time.Second)
		},
		Stalled: func(t *testing.T) uplink.Sink {
			release := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-release:
				}
			}))
			t.Cleanup(srv.Close)
			t.Cleanup(func() { close(release) }) // before srv.Close, which waits for handlers
			return newSink(t, srv.URL+"/in", 10*time.Minute)
		},
		Refusing: func(t *testing.T) uplink.Sink {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "not a batch I take", http.StatusUnprocessableEntity)
			}))
			t.Cleanup(srv.Close)
			return newSink(t, srv.URL+"/in", 30*time.Second)
		},
	})
}

// TestHTTPStatusClassification: 2xx acks; 408, 429, 5xx and refused credentials or a wrong
// URL are retried; other 4xx are permanent; Retry-After is honoured.
func TestHTTPStatusClassification(t *testing.T) {
	for _, tc := range []struct {
		code       int
		retryAfter string
		want       string // ok | retry | permanent
	}{
		{200, "", "ok"}, {202, "", "ok"}, {204, "", "ok"},
		{400, "", "permanent"}, {413, "", "permanent"}, {415, "", "permanent"}, {422, "", "permanent"},
		{401, "", "retry"}, {403, "", "retry"}, {404, "", "retry"}, {405, "", "retry"},
		{408, "", "retry"}, {429, "7", "retry"}, {500, "", "retry"}, {502, "", "retry"}, {503, "", "retry"},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.code)
			}))
			defer srv.Close()
			sink := newSink(t, srv.URL+"/in/{gateway}/{kind}", 30*time.Second)
			err := sink.Send(context.Background(), &uplink.Batch{ID: "b1", Kind: record.KindRecords, Payload: []byte(`{}`)})
			got := "retry"
			switch {
			case err == nil:
				got = "ok"
			case errors.Is(err, uplink.ErrPermanent):
				got = "permanent"
			}
			if got != tc.want {
				t.Errorf("status %d: %s (err %v), want %s", tc.code, got, err, tc.want)
			}
			if tc.retryAfter != "" && !strings.Contains(fmt.Sprint(err), "retry after 7s") {
				t.Errorf("Retry-After not carried: %v", err)
			}
		})
	}
}
