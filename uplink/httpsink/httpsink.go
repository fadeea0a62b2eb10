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
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/uplink"
)

// Sink is an HTTP collector. It keeps idle keep-alive connections between batches.
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

var _ uplink.Sink = (*Sink)(nil)

// New is the uplink.SinkFactory of the http sink. It reads the credential and certificate
// files but dials nothing.
func New(cfg config.Uplink, gateway string, log *slog.Logger) (uplink.Sink, error) {
	s := &Sink{
		name: cfg.Name, url: cfg.URL, gateway: gateway, headers: cfg.Headers, user: cfg.Username,
		log: log.With("component", "httpsink", "uplink", cfg.Name),
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2
	tr.ResponseHeaderTimeout = cfg.Timeout.D()
	if strings.HasPrefix(cfg.URL, "https:") {
		tc, err := uplink.TLSConfig(cfg.TLS)
		if err != nil {
			return nil, fmt.Errorf("uplink %q: %w", cfg.Name, err)
		}
		tr.TLSClientConfig = tc
	}
	s.client = &http.Client{Transport: tr, Timeout: cfg.Timeout.D()}
	var err error
	if cfg.BearerTokenFile != "" {
		if s.token, err = uplink.NewSecret(cfg.BearerTokenFile); err != nil {
			return nil, fmt.Errorf("uplink %q: bearer_token_file: %w", cfg.Name, err)
		}
	}
	if cfg.PasswordFile != "" {
		if s.pass, err = uplink.NewSecret(cfg.PasswordFile); err != nil {
			return nil, fmt.Errorf("uplink %q: password_file: %w", cfg.Name, err)
		}
	}
	return s, nil
}

// Send POSTs b and returns nil once the collector answered 2xx.
func (s *Sink) Send(ctx context.Context, b *uplink.Batch) error {
	u := config.ExpandUplink(s.url, s.gateway, string(b.Kind))
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

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(h string, now time.Time) (time.Duration, bool) {
	if h == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(h); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, true
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
