package config

import (
	"testing"
	"time"

	"github.com/edgegate/edgegate/buffer"
)

func TestBufferDefaultsAndSyncPolicy(t *testing.T) {
	c, err := Parse("x.yml", []byte("gateway: {id: gw-01}\nbroker: {allow_anonymous: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Buffer
	if b.Sync.Interval() != 0 || b.Sync.String() != "always" || b.MaxBytes != 512<<20 || b.ReserveFree != 64<<20 ||
		b.OnFull != "drop_oldest" || b.Retention != 0 {
		t.Fatalf("defaults = %+v", b)
	}
	c, err = Parse("x.yml", []byte("gateway: {id: gw-01}\nbroker: {allow_anonymous: true}\nbuffer: {sync: 10ms, retention: 168h}\n"))
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
