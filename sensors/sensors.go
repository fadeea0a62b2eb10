// Package sensors polls local sensors and publishes their readings through the broker's
// ingest path. It defines the Driver interface, the Poller (one goroutine per sensor, a
// jittered schedule, a read timeout, backoff on errors, per-sensor status) and the reading
// payload. The drivers live in sub-packages, one per device family.
package sensors

import (
	"context"
	"strconv"
	"time"

	"github.com/edgegate/edgegate/record"
)

// Reading is one measured value.
type Reading struct {
	Metric string  // e.g. temperature; {metric} in the sensor's topic
	Value  float64 // in Unit
	Unit   string  // SenML unit, e.g. Cel, %RH, Pa
}

// Driver reads one sensor.
//
// Read is never called concurrently with itself or with Close. It should return soon after
// ctx ends (the poller's read timeout), but the poller does not rely on it: a Read stuck in
// a bus transaction is left running, the sensor is marked down, and no other Read starts
// until it returns. Read may return readings together with an error when only part of
// the device answered (one probe of several): the poller publishes what it got and counts
// the error. The returned slice is the caller's.
//
// Close releases the device; the poller calls it once, after the last Read returned.
type Driver interface {
	Read(ctx context.Context) ([]Reading, error)
	Close() error
}

// Runner is implemented by drivers that watch their device between reads (a GPIO edge
// counter). The poller runs Run on a goroutine it owns, from the open until just before
// Close; Run returns when ctx ends.
type Runner interface {
	Run(ctx context.Context) error
}

// Publisher takes a reading's payload into the ingest path (broker.Broker.Publish).
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte) error
}

// Payload is the JSON a reading is published as: {"value":21.5,"ts":<unix ms>,"unit":"Cel"}.
func Payload(r Reading, ts time.Time) []byte {
	b := make([]byte, 0, 64)
	b = append(b, `{"value":`...)
	b = record.AppendFloat(b, r.Value)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts.UnixMilli(), 10)
	if r.Unit != "" {
		b = append(b, `,"unit":`...)
		b = record.AppendString(b, r.Unit)
	}
	return append(b, '}')
}
