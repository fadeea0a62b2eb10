package uplink_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/pubsubsink"
)

// flaky is a pstest reactor: Publish fails with Unavailable while down is set, and with
// InvalidArgument for requests carrying the record id poison.
type flaky struct {
	down   atomic.Bool
	poison string
	calls  atomic.Int64
}

func (f *flaky) React(req any) (bool, any, error) {
	f.calls.Add(1)
	if f.down.Load() {
		return true, nil, status.Error(codes.Unavailable, "upstream down")
	}
	if r, ok := req.(*pubsubpb.PublishRequest); ok && f.poison != "" {
		for _, m := range r.Messages {
			if m.Attributes["id"] == f.poison {
				return true, nil, status.Error(codes.InvalidArgument, "message refused")
			}
		}
	}
	return false, nil, nil
}

// startPubSub starts the library's fake server, points the client at it the way Google
// documents for emulators, and creates the topic.
func startPubSub(t *testing.T, f *flaky, topic string) *pstest.Server {
	t.Helper()
	srv := pstest.NewServer(pstest.ServerReactorOption{FuncName: "Publish", Reactor: f})
	t.Cleanup(func() { srv.Close() })
	t.Setenv("PUBSUB_EMULATOR_HOST", srv.Addr)
	if _, err := srv.GServer.CreateTopic(context.Background(), &pubsubpb.Topic{Name: "projects/proj/topics/" + topic}); err != nil {
		t.Fatal(err)
	}
	return srv
}

// TestPubSubOneMessagePerRecord: every record is one message with the id, gateway, kind,
// series and batch attributes and, with ordering: series, its series as ordering key.
func TestPubSubOneMessagePerRecord(t *testing.T) {
	f := &flaky{}
	srv := startPubSub(t, f, "edgegate-records")
	s := openStore(t, t.TempDir())
	fill(t, s, "sensors/a/t", 0, 120)
	cfg := uplinkConfig(`{name: gcp, type: pubsub, project: proj, topic: "edgegate-{kind}", ordering: series, batch: {max_records: 50, linger: 10ms}}`)
	sink, err := pubsubsink.New(&cfg, "gw", discard)
	own(t, sink)
	if err != nil {
		t.Fatal(err)
	}
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	run(t, u)
	testutil.Eventually(t, 20*time.Second, "120 records acked", func() bool { return u.Stats().Records.Load() == 120 })
	msgs := srv.Messages()
	if len(msgs) != 120 {
		t.Fatalf("%d messages, want 120", len(msgs))
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		a := m.Attributes
		if a["gateway"] != "gw" || a["kind"] != "records" || a["series"] != "s" || a["batch"] == "" || m.OrderingKey != "s" {
			t.Errorf("message attributes %v, ordering key %q", a, m.OrderingKey)
		}
		var rec record.Record
		if err := rec.UnmarshalJSON(m.Data); err != nil || rec.ID != a["id"] {
			t.Errorf("data %s does not carry id %s: %v", m.Data, a["id"], err)
		}
		seen[a["id"]] = true
	}
	if len(seen) != 120 {
		t.Errorf("%d distinct ids, want 120", len(seen))
	}
}

// TestPubSubOutageAndRefusal: while Pub/Sub is unavailable nothing is acknowledged; after
// it returns every record arrives (resends carry the same ids); a batch refused with
// InvalidArgument goes to the dead-letter log and the uplink moves on.
func TestPubSubOutageAndRefusal(t *testing.T) {
	f := &flaky{poison: "r000007"}
	f.down.Store(true)
	srv := startPubSub(t, f, "t-records")
	s := openStore(t, t.TempDir())
	fill(t, s, "sensors/a/t", 0, 30)
	cfg := uplinkConfig(`{name: gcp, type: pubsub, project: proj, topic: "t-{kind}", timeout: 300ms, batch: {max_records: 10, linger: 10ms}, backoff: {min: 10ms, max: 100ms}}`)
	sink, _ := pubsubsink.New(&cfg, "gw", discard)
	own(t, sink)
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	run(t, u)
	testutil.Eventually(t, 20*time.Second, "failed publishes while down", func() bool { return u.Stats().Errors.Load() >= 2 })
	if u.Stats().Records.Load() != 0 || len(srv.Messages()) != 0 || u.Status().Connected {
		t.Fatalf("acknowledged while Pub/Sub is down: %+v", u.Status())
	}
	f.down.Store(false)
	testutil.Eventually(t, 20*time.Second, "20 records and one dead letter", func() bool {
		return u.Stats().Records.Load() == 20 && u.Stats().DeadLetters.Load() == 1
	})
	var mu sync.Mutex
	ids := map[string]int{}
	for _, m := range srv.Messages() {
		mu.Lock()
		ids[m.Attributes["id"]]++
		mu.Unlock()
	}
	for i := range 30 {
		id := fmt.Sprintf("r%06d", i)
		if want := i >= 10; (ids[id] > 0) != want {
			t.Errorf("record %s delivered %d times, want delivered=%v", id, ids[id], want)
		}
	}
}
