package loadgen_test

import (
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegate/edgegate/internal/loadgen"
)

type pahoSet struct{ clients []paho.Client }

var sets int

func connect(b *testing.B, addr string, n int) *pahoSet {
	sets++
	cs, err := loadgen.Connect(addr, n, fmt.Sprintf("bench%d", sets))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { loadgen.Disconnect(cs) })
	return &pahoSet{cs}
}

// connectWait connects once the daemon's broker listens.
func connectWait(b *testing.B, addr string, n int) *pahoSet {
	deadline := time.Now().Add(30 * time.Second)
	for {
		sets++
		cs, err := loadgen.Connect(addr, n, fmt.Sprintf("bench%d", sets))
		if err == nil {
			b.Cleanup(func() { loadgen.Disconnect(cs) })
			return &pahoSet{cs}
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
