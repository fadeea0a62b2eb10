package gateway_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/testutil"
)

// publishN sends n QoS 1 readings from one paho client, keeping up to window unacknowledged.
func publishN(b *testing.B, addr string, n int) {
	c := testutil.Paho(b, addr, fmt.Sprintf("bench-%d", time.Now().UnixNano()))
	const window = 100
	toks := make([]paho.Token, 0, window)
	payload := []byte(`{"value": 21.5, "unit": "Cel", "ts": 1764158400123}`)
	for i := 0; i < n; i++ {
		toks = append(toks, c.Publish("devices/d1/temperature", 1, false, payload))
		if len(toks) == window || i == n-1 {
			for _, t := range toks {
				if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
					b.Fatalf("publish: %v", t.Error())
				}
			}
			toks = toks[:0]
		}
	}
}

// BenchmarkOnePahoPublisherQoS1 measures one paho client publishing QoS 1 into the gateway
// (durable: each PUBACK waits for the fsync of its group) next to the same client into a
// bare mochi broker in the same run. Report: gateway msg/s ÷ bare msg/s.
func BenchmarkOnePahoPublisherQoS1(b *testing.B) {
	b.Run("bare-mochi", func(b *testing.B) {
		srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
		srv.AddHook(new(auth.AllowHook), nil)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv.AddListener(listeners.NewNet("t", ln))
		srv.Serve()
		defer srv.Close()
		b.ResetTimer()
		publishN(b, ln.Addr().String(), b.N)
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
	})
	b.Run("edgegate", func(b *testing.B) {
		path := writeConfig(b, b.TempDir(), "127.0.0.1:0", "")
		// The per-client rate limit (1000/s by default) would measure itself, not the path.
		y, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		raised := bytes.Replace(y, []byte("allow_anonymous: true"), []byte("allow_anonymous: true\n  max_rate_per_client: 1000000"), 1)
		if bytes.Equal(raised, y) {
			b.Fatal("writeConfig changed: no allow_anonymous line to put max_rate_per_client after")
		}
		if err := os.WriteFile(path, raised, 0o644); err != nil {
			b.Fatal(err)
		}
		r := start(b, path, clock.Real{})
		b.ResetTimer()
		publishN(b, r.g.BrokerAddrs()[0], b.N)
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
	})
}
