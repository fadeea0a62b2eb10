package loadgen_test

import (
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/internal/loadgen"
)

var sets int

// connect connects n publishers, retrying until the broker listens (a daemon starting).
func connect(b *testing.B, addr string, n int) []paho.Client {
	deadline := time.Now().Add(30 * time.Second)
	for {
		sets++
		cs, err := loadgen.Connect(addr, n, fmt.Sprintf("bench%d", sets))
		if err == nil {
			b.Cleanup(func() { loadgen.Disconnect(cs) })
			return cs
		}
		if time.Now().After(deadline) {
			b.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPayloadIs100Bytes(t *testing.T) {
	for _, p := range [][]byte{loadgen.Payload("l1", 0, 0), loadgen.Payload("l123", 99, 1234567)} {
		if len(p) != 100 {
			t.Fatalf("%d bytes: %s", len(p), p)
		}
	}
}
