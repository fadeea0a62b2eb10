// Package pubsubsink publishes batches to Google Cloud Pub/Sub (cloud.google.com/go/pubsub/v2):
// one message per record or pane, with the attributes id (the stable id, for Dataflow's
// idAttribute dedup), gateway, kind, series and batch, and optionally one ordering key per
// series. A batch is acknowledged when every one of its publish results succeeded; if any
// failed, the whole batch is sent again with the same ids, which downstream dedup absorbs.
package pubsubsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgegate/edgegate/uplink"
)

// Sink is one Pub/Sub client; it publishes to the topic(s) its template names.
type Sink struct {
	timeout time.Duration
	cfg     Config
	gateway string
	log     *slog.Logger

	mu     sync.Mutex // guards client and pubs
	client *pubsub.Client
	pubs   map[string]*pubsub.Publisher // by topic id
}

var (
	_ uplink.Sink        = (*Sink)(nil)
	_ uplink.MultiSender = (*Sink)(nil)
)

// New builds the pubsub sink of an uplink. It checks the credentials file but dials
// nothing: the client is made on the first Send. The PUBSUB_EMULATOR_HOST environment
// variable, as Google documents it, points the client at an emulator.
func New(u *uplink.Config, gateway string, log *slog.Logger) (*Sink, error) {
	cfg, ok := u.Sink.(*Config)
	if !ok {
		return nil, fmt.Errorf("uplink %q: not a pubsub uplink", u.Name)
	}
	if cfg.CredentialsFile != "" {
		b, err := os.ReadFile(cfg.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("uplink %q: credentials_file: %w", u.Name, err)
		}
		var k struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(b, &k); err != nil || k.Type != "service_account" {
			return nil, fmt.Errorf("uplink %q: credentials_file %s: expected a service account key (JSON with \"type\": \"service_account\")", u.Name, cfg.CredentialsFile)
		}
	}
	return &Sink{timeout: u.Timeout.D(), cfg: *cfg, gateway: gateway,
		log: log.With("component", "pubsubsink", "uplink", u.Name), pubs: map[string]*pubsub.Publisher{}}, nil
}

func (s *Sink) publisher(kind string) (*pubsub.Publisher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		var opts []option.ClientOption
		if s.cfg.CredentialsFile != "" {
			opts = append(opts, option.WithAuthCredentialsFile(option.ServiceAccount, s.cfg.CredentialsFile))
		}
		if s.cfg.Endpoint != "" {
			opts = append(opts, option.WithEndpoint(s.cfg.Endpoint))
		}
		// The client dials lazily; this context only bounds its setup.
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		defer cancel()
		c, err := pubsub.NewClient(ctx, s.cfg.Project, opts...)
		if err != nil {
			return nil, fmt.Errorf("pubsub client: %w", err)
		}
		s.client = c
	}
	id := uplink.Expand(s.cfg.Topic, s.gateway, kind)
	p, ok := s.pubs[id]
	if !ok {
		p = s.client.Publisher(id)
		p.PublishSettings.Timeout = s.timeout
		p.EnableMessageOrdering = s.cfg.Ordering == "series"
		s.pubs[id] = p
	}
	return p, nil
}

// item is what the sink reads of a record or pane for its attributes.
type item struct {
	ID     string `json:"id"`
	Series string `json:"series"` // records
	Key    string `json:"key"`    // panes: the series
	Topic  string `json:"topic"`
}

// Send publishes one message per record of b and returns nil once all were accepted.
func (s *Sink) Send(ctx context.Context, b *uplink.Batch) error {
	_, err := s.SendAll(ctx, []*uplink.Batch{b})
	return err
}

// SendAll publishes the messages of every batch of bs at once, so the client bundles and
// pipelines them, then checks the results batch by batch, in order.
func (s *Sink) SendAll(ctx context.Context, bs []*uplink.Batch) (int, error) {
	type sent struct {
		results []*pubsub.PublishResult
		keys    []string
		p       *pubsub.Publisher
	}
	all := make([]sent, len(bs))
	// stop is the first batch that could not be published at all, and why; the batches
	// before it are still waited for.
	stop, stopErr := len(bs), error(nil)
publish:
	for j, b := range bs {
		p, err := s.publisher(string(b.Kind))
		if err != nil {
			stop, stopErr = j, err
			break
		}
		all[j] = sent{results: make([]*pubsub.PublishResult, len(b.Items)), keys: make([]string, len(b.Items)), p: p}
		for i, data := range b.Items {
			var it item
			if err := json.Unmarshal(data, &it); err != nil {
				stop, stopErr = j, fmt.Errorf("batch %s record %d: %w: %w", b.ID, i, uplink.ErrPermanent, err)
				break publish
			}
			series := it.Series
			if series == "" {
				series = it.Key
			}
			attrs := map[string]string{"id": it.ID, "gateway": s.gateway, "kind": string(b.Kind), "batch": b.ID}
			if series != "" {
				attrs["series"] = series
			}
			m := &pubsub.Message{Data: data, Attributes: attrs}
			if p.EnableMessageOrdering {
				k := series
				if k == "" {
					k = it.Topic // raw messages: ordered per local topic
				}
				all[j].keys[i], m.OrderingKey = k, k
			}
			all[j].results[i] = p.Publish(ctx, m)
		}
	}
	acked := len(bs)
	var first error
	for j, sn := range all {
		if j == stop {
			if first == nil {
				acked, first = stop, stopErr
			}
			break
		}
		failed := 0
		var berr error
		paused := map[string]bool{}
		for i, r := range sn.results {
			if r == nil {
				continue // not published: an earlier batch failed to encode
			}
			if _, err := r.Get(ctx); err != nil {
				failed++
				if berr == nil {
					berr = err
				}
				if sn.keys[i] != "" {
					paused[sn.keys[i]] = true
				}
			}
		}
		// A failed publish pauses its ordering key; the resend must find it open again.
		for k := range paused {
			sn.p.ResumePublish(k)
		}
		if berr != nil && first == nil {
			acked = j
			first = fmt.Errorf("publish batch %s: %d of %d messages failed: %w", bs[j].ID, failed, len(sn.results), berr)
			if permanent(berr) {
				first = fmt.Errorf("%w: %w", uplink.ErrPermanent, first)
			}
		}
	}
	return acked, first
}

// permanent reports errors that resending the same messages cannot fix. A missing topic or
// refused credentials are not among them: they would refuse every batch alike, and are
// fixed on the cloud side while the buffer holds the data.
func permanent(err error) bool {
	if errors.Is(err, pubsub.ErrOversizedMessage) {
		return true
	}
	return status.Code(err) == codes.InvalidArgument
}

// Close flushes and stops the publishers and closes the client.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, p := range s.pubs {
		p.Stop()
		delete(s.pubs, id)
	}
	if s.client == nil {
		return nil
	}
	err := s.client.Close()
	s.client = nil
	return err
}
