package pubsubsink_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/pubsubsink"
	"github.com/edgegate/edgegate/uplink/sinktest"
)

var discard = slog.New(slog.DiscardHandler)

// newSink builds the pubsub sink of an uplink publishing to project proj, topic
// "edgegate-{kind}", of the emulator at PUBSUB_EMULATOR_HOST, with timeout per send.
func newSink(t *testing.T, timeout time.Duration) uplink.Sink {
	t.Helper()
	cfg := &uplink.Config{Name: "gcp", Type: "pubsub"}
	cfg.SetDefaults()
	cfg.Timeout = conf.Duration(timeout)
	sc := pubsubsink.Type().NewConfig().(*pubsubsink.Config)
	sc.Project, sc.Topic = "proj", "edgegate-{kind}"
	cfg.Sink = sc
	s, err := pubsubsink.New(cfg, "gw", discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// reactor answers the emulator's Publish calls with react (nil: as the emulator does).
type reactor func() error

func (r reactor) React(any) (bool, any, error) {
	if err := r(); err != nil {
		return true, nil, err
	}
	return false, nil, nil
}

// startPubSub starts the library's fake server with r, points the client at it the way
// Google documents for emulators, and creates the topic.
func startPubSub(t *testing.T, r reactor) *pstest.Server {
	t.Helper()
	srv := pstest.NewServer(pstest.ServerReactorOption{FuncName: "Publish", Reactor: r})
	t.Cleanup(func() { srv.Close() })
	t.Setenv("PUBSUB_EMULATOR_HOST", srv.Addr)
	if _, err := srv.GServer.CreateTopic(context.Background(), &pubsubpb.Topic{Name: "projects/proj/topics/edgegate-records"}); err != nil {
		t.Fatal(err)
	}
	return srv
}

// TestContract: the pubsub sink keeps uplink.Sink's promises against the library's fake
// server (one message per record), an address nothing listens on, a server that never
// answers Publish, and one that answers InvalidArgument.
func TestContract(t *testing.T) {
	sinktest.Run(t, sinktest.Harness{
		Up: func(t *testing.T) (uplink.Sink, func() []string) {
			srv := startPubSub(t, func() error { return nil })
			return newSink(t, 30*time.Second), func() []string {
				var ids []string
				for _, m := range srv.Messages() {
					ids = append(ids, m.Attributes["id"])
				}
				return ids
			}
		},
		Unreachable: func(t *testing.T) uplink.Sink {
			t.Setenv("PUBSUB_EMULATOR_HOST", testutil.FreeAddr(t))
			return newSink(t, time.Second) // the client retries Unavailable until then
		},
		Stalled: func(t *testing.T) uplink.Sink {
			release := make(chan struct{})
			startPubSub(t, func() error { <-release; return nil })
			s := newSink(t, 10*time.Minute)
			// Before the sink's Close, which waits for its publishes.
			t.Cleanup(func() { close(release) })
			return s
		},
		Refusing: func(t *testing.T) uplink.Sink {
			startPubSub(t, func() error { return status.Error(codes.InvalidArgument, "message refused") })
			return newSink(t, 30*time.Second)
		},
	})
}
