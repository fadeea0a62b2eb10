package config

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/edgegate/edgegate/buffer"
)

func TestBufferDefaultsAndSyncPolicy(t *testing.T) {
	c, err := Parse("x.yml", []byte("gateway: {id: gw-01}\nbroker: {allow_anonymous: true}\n"), full)
	if err != nil {
		t.Fatal(err)
	}
	b := c.Buffer
	if b.Sync.Interval() != 0 || b.Sync.String() != "always" || b.MaxBytes != 512<<20 || b.ReserveFree != 64<<20 ||
		b.OnFull != "drop_oldest" || b.Retention != 0 {
		t.Fatalf("defaults = %+v", b)
	}
	c, err = Parse("x.yml", []byte("gateway: {id: gw-01}\nbroker: {allow_anonymous: true}\nbuffer: {sync: 10ms, retention: 168h}\n"), full)
	if err != nil {
		t.Fatal(err)
	}
	if c.Buffer.Sync.Interval() != 10*time.Millisecond || c.Buffer.Sync.String() != "10ms" || c.Buffer.Retention.D() != 168*time.Hour {
		t.Fatalf("parsed %+v", c.Buffer)
	}
}

// The config refuses what the store would not hold data in.
func TestMinBufferBytesIsTheStoresMinimum(t *testing.T) {
	if minBufferBytes != buffer.MinMaxBytes {
		t.Fatalf("config's minimum %d != buffer.MinMaxBytes %d", minBufferBytes, buffer.MinMaxBytes)
	}
}

// The largest packet the broker may accept, base64-encoded into a record, still fits one
// buffer value with room for the envelope (topic, series, labels, id).
func TestMaxPacketFitsOneBufferValue(t *testing.T) {
	const envelope = 64 << 10
	if need := base64.StdEncoding.EncodedLen(maxPacketLimit) + envelope; need > buffer.MaxValueSize {
		t.Fatalf("max_packet_bytes up to %d: a record needs up to %d bytes, buffer.MaxValueSize is %d", maxPacketLimit, need, buffer.MaxValueSize)
	}
}
