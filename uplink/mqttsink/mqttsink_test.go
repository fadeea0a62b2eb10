package mqttsink_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/mqttsink"
	"github.com/edgegate/edgegate/uplink/sinktest"
)

var discard = slog.New(slog.DiscardHandler)

// newSink builds the mqtt sink of an uplink publishing to the broker at url, with timeout
// per connection attempt and per PUBACK.
func newSink(t *testing.T, url string, timeout time.Duration) uplink.Sink {
	t.Helper()
	cfg := &uplink.Config{Name: "cloud", Type: "mqtt"}
	cfg.SetDefaults()
	cfg.Timeout = conf.Duration(timeout)
	sc := mqttsink.Type().NewConfig().(*mqttsink.Config)
	sc.URL = url
	sc.Resolve("gw", cfg.Name)
	cfg.Sink = sc
	s, err := mqttsink.New(cfg, "gw", discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestContract: the mqtt sink keeps uplink.Sink's promises against a real broker (mochi),
// an address nothing listens on, and a server that never answers CONNECT. MQTT has no
// refusal for good.
func TestContract(t *testing.T) {
	sinktest.Run(t, sinktest.Harness{
		Up: func(t *testing.T) (uplink.Sink, func() []string) {
			up := testutil.StartUpstream(t)
			return newSink(t, up.URL(), 30*time.Second), func() []string {
				var ids []string
				for _, m := range up.Messages() {
					got, err := sinktest.PayloadIDs(m.Payload)
					if err != nil {
						t.Errorf("message on %s: %v", m.Topic, err)
					}
					ids = append(ids, got...)
				}
				return ids
			}
		},
		Unreachable: func(t *testing.T) uplink.Sink {
			return newSink(t, "tcp://"+testutil.FreeAddr(t), 30*time.Second)
		},
		Stalled: func(t *testing.T) uplink.Sink {
			return newSink(t, "tcp://"+testutil.StalledServer(t), 10*time.Minute)
		},
	})
}
