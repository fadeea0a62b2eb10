package broker

import (
	"io"
	"log/slog"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/clock"
)

// BenchmarkGuardPublish is what the guard adds to every device PUBLISH: the rate meter in
// OnPacketRead, then grants, topic limits in OnPublish.
func BenchmarkGuardPublish(b *testing.B) {
	cfg := config.Default().Broker
	cfg.MaxRatePerClient = 1e12 // measure the checks, not refusals
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	g := newGuard(cfg, NewRefusals(clock.Real{}, log), clock.Real{}, log)
	g.srv = mqtt.New(&mqtt.Options{Logger: log})
	cl := g.srv.NewClient(nil, "bench", "dev-1", false)
	g.sessions[cl] = &session{
		user:      "dev-1",
		publish:   expand([]string{"status/{username}", "devices/{username}/#"}, "dev-1", "dev-1"),
		subscribe: expand([]string{"agg/#"}, "dev-1", "dev-1"),
		meter:     g.meters.get("dev-1", "dev-1", clock.Real{}.Now()),
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "devices/dev-1/temperature", PacketID: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.OnPacketRead(cl, pk); err != nil {
			b.Fatal(err)
		}
		if _, err := g.OnPublish(cl, pk); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIngestHookDropped is the ingest hook's cost for a publish that configuration
// drops (unrouted: drop): the route lookup and the answer, the floor every publish pays;
// on a persistent session (MQTT 3.1.1 clean session 0) also the record of its arrival
// (buffer.Store.Arrive).
func BenchmarkIngestHookDropped(b *testing.B) {
	for _, clean := range []bool{true, false} {
		name := "clean"
		if !clean {
			name = "persistent"
		}
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, func(c *config.Config) { c.Unrouted = "drop" })
			cl := e.b.srv.NewClient(nil, "tcp", "dev-1", false)
			cl.Properties.ProtocolVersion, cl.Properties.Clean = 4, clean
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "bench/noop/temperature", PacketID: 1, Payload: []byte(`{"value":21.5}`)}
			b.ReportAllocs()
			for b.Loop() {
				pk.PacketID++
				if _, err := e.hook.OnPublish(cl, pk); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
