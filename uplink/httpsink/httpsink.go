// Package httpsink POSTs each batch (SPEC §3.3) to an HTTP collector: a 2xx answer is the
// ack; 408, 425, 429, 5xx and network errors are retried; 401, 403, 404 and 405 are
// retried too, because they mean a wrong URL or refused credentials, which would refuse
// every batch alike (dead-lettering the whole buffer would only hide the mistake); any other
// 4xx is the collector refusing this batch, a permanent error that sends the batch to the
// dead-letter log.
package httpsink

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgegate/edgegate/uplink"
)

// Sink is an HTTP collector. It keeps idle keep-alive connections between batches. Send
// and SendAll are not called concurrently (the uplink's contract); SendAll itself runs up
// to 4 requests at once, and Send is safe for that.
type Sink struct {
	name    string
	url     string // with {gateway} and {kind}
	gateway string
	client  *http.Client
	headers map[string]string
	token   *uplink.Secret // bearer token, or nil
	user    string
	pass    *uplink.Secret // basic auth password, or nil
	log     *slog.Logger
}

var (
	_ uplink.Sink        = (*Sink)(nil)
	_ uplink.MultiSender = (*Sink)(nil)
)

// parallel bounds the requests a group of batches keeps in flight.
const parallel = 4

// New builds the http sink of an uplink. It reads the credential and certificate files but
// dials nothing.
func New(cfg *uplink.Config, gateway string, log *slog.Logger) (*Sink, error) {
	c, ok := cfg.Sink.(*Config)
	if !ok {
		return nil, fmt.Errorf("uplink %q: not an http uplink", cfg.Name)
	}
	s := &Sink{
		name: cfg.Name, url: c.URL, gateway: gateway, headers: c.Headers, user: c.Username,
		log: log.With("component", "httpsink", "uplink", cfg.Name),
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = parallel
	tr.ResponseHeaderTimeout = cfg.Timeout.D()
	if strings.HasPrefix(c.URL, "https:") {
		tc, err := uplink.TLSConfig(c.TLS)
		if err != nil {
			return nil, fmt.Errorf("uplink %q: %w", cfg.Name, err)
		}
		tr.TLSClientConfig = tc
	}
	s.client = &http.Client{Transport: tr, Timeout: cfg.Timeout.D()}
	var err error
	if c.BearerTokenFile != "" {
		if s.token, err = uplink.NewSecret(c.BearerTokenFile); err != nil {
			return nil, fmt.Errorf("uplink %q: bearer_token_file: %w", cfg.Name, err)
		}
	}
	if c.PasswordFile != "" {
		if s.pass, err = uplink.NewSecret(c.PasswordFile); err != nil {
			return nil, fmt.Errorf("uplink %q: password_file: %w", cfg.Name, err)
		}
	}
	return s, nil
}

// Send POSTs b and returns nil once the collector answered 2xx.
func (s *Sink) Send(ctx context.Context, b *uplink.Batch) error {
	u := uplink.Expand(s.url, s.gateway, string(b.Kind))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b.Payload))
	if err != nil {
		return fmt.Errorf("post batch %s: %w: %w", b.ID, uplink.ErrPermanent, err)
	}
	for k, v := range s.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	if b.Encoding != "" {
		req.Header.Set("Content-Encoding", b.Encoding)
	}
	// The batch id doubles as an idempotency key: a collector that keeps them can drop
	// the resends that at-least-once delivery produces.
	req.Header.Set("Idempotency-Key", b.ID)
	switch {
	case s.token != nil:
		req.Header.Set("Authorization", "Bearer "+s.token.Value())
	case s.pass != nil:
		req.SetBasicAuth(s.user, s.pass.Value())
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("post batch %s: %w", b.ID, err)
	}
	defer resp.Body.Close()
	// Read a little of the body for the error message, then drop the rest so the
	// connection can be reused.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	err = fmt.Errorf("post batch %s to %s: %s: %s", b.ID, req.URL.Redacted(), resp.Status, oneLine(snippet))
	switch {
	case code == 401 || code == 403:
		return fmt.Errorf("%w (check the credentials)", err)
	case code == 404 || code == 405:
		return fmt.Errorf("%w (check the url)", err)
	case code == 408 || code == 425 || code >= 500:
		return err
	case code == 429:
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return uplink.RetryAfter(err, d)
		}
		return err
	case code >= 400:
		return fmt.Errorf("%w: %w", uplink.ErrPermanent, err)
	}
	return err
}

// SendAll posts the first batch alone — an upstream that is down or overloaded gets one
// request per attempt, not a burst — then the others, up to 4 at a time, and returns how
// many leading batches were acknowledged. A batch acknowledged after one that failed is
// sent again later: a duplicate with the same id and Idempotency-Key.
func (s *Sink) SendAll(ctx context.Context, bs []*uplink.Batch) (int, error) {
	if len(bs) == 0 {
		return 0, nil
	}
	if err := s.Send(ctx, bs[0]); err != nil {
		return 0, err
	}
	errs := make([]error, len(bs))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := 1; i < len(bs); i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Send(ctx, bs[i])
			<-sem
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return i, err
		}
	}
	return len(bs), nil
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(h string, now time.Time) (time.Duration, bool) {
	if h == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(h); err == nil && n >= 0 {
		// A day is longer than any backoff cap; beyond it the product could overflow.
		return time.Duration(min(n, 86400)) * time.Second, true
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

func oneLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if s == "" {
		return "(empty body)"
	}
	return s
}

// Close drops idle connections.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}
