package ingest

import (
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
)

func benchDecode(b *testing.B, route config.Route, tp string, payload []byte) {
	rt, err := NewRouter([]config.Route{route}, "drop")
	if err != nil {
		b.Fatal(err)
	}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, _, err := rt.Decode(tp, payload, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeJSONValue(b *testing.B) {
	benchDecode(b, config.Route{Topic: "devices/+d/+m", Format: "json", Series: "{d}/{m}"}, "devices/d1/t",
		[]byte(`{"value": 21.5, "ts": 1795694400123, "unit": "Cel"}`))
}

func BenchmarkDecodeJSONFields(b *testing.B) {
	benchDecode(b, config.Route{Topic: "devices/+d/+m", Format: "json", Series: "{d}/{field}"}, "devices/d1/env",
		[]byte(`{"ts": 1795694400123, "temperature": 21.5, "humidity": 40, "pressure": 1013.2}`))
}

func BenchmarkDecodeSenML(b *testing.B) {
	benchDecode(b, config.Route{Topic: "senml/+d", Format: "senml", Series: "{d}"}, "senml/d1",
		[]byte(`[{"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},{"n":"current","u":"A","v":1.2}]`))
}

func BenchmarkDecodeNumber(b *testing.B) {
	benchDecode(b, config.Route{Topic: "devices/+d/+m", Format: "number", Series: "{d}/{m}"}, "devices/d1/t", []byte(`21.5`))
}
