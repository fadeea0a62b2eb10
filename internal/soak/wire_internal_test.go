package soak

import (
	"testing"
)

// TestFrameReader: packets cut at every byte boundary come out whole, in order, with
// PUBLISH and PUBACK fields parsed as MQTT 3.1.1 and 5 define them.
func TestFrameReader(t *testing.T) {
	// PUBLISH QoS 1, topic "a/b", packet id 7, payload "21.5".
	body := []byte{0, 3, 'a', '/', 'b', 0, 7, '2', '1', '.', '5'}
	pub := append([]byte{0x32, byte(len(body))}, body...)
	// MQTT 5 adds a property length (0) after the packet id.
	body5 := []byte{0, 3, 'a', '/', 'b', 0, 7, 0, '2', '1', '.', '5'}
	pub5 := append([]byte{0x32, byte(len(body5))}, body5...)
	puback := []byte{0x40, 2, 0, 7}
	puback5 := []byte{0x40, 4, 0, 8, 0x99, 0}
	big := append([]byte{0x30, 0x80 | (200 % 128), 200 / 128, 0, 1, 'x'}, make([]byte, 197)...) // QoS 0, 200-byte body
	stream := append(append(append(append(append([]byte(nil), pub...), puback...), big...), puback5...), pub5...)
	for cut := 1; cut < len(stream); cut++ {
		var r frameReader
		var got []frame
		keep := func(f frame) { f.body = append([]byte(nil), f.body...); got = append(got, f) }
		r.feed(stream[:cut], keep)
		r.feed(stream[cut:], keep)
		if len(got) != 5 {
			t.Fatalf("cut at %d: %d frames", cut, len(got))
		}
		if tp, pid, qos, pl, ok := publishOf(got[0], false); !ok || tp != "a/b" || pid != 7 || qos != 1 || string(pl) != "21.5" {
			t.Fatalf("publish = %q %d %d %q %v", tp, pid, qos, pl, ok)
		}
		if pid, reason, ok := pubackOf(got[1]); !ok || pid != 7 || reason != 0 {
			t.Fatalf("puback = %d %#x", pid, reason)
		}
		if tp, _, qos, pl, ok := publishOf(got[2], false); !ok || tp != "x" || qos != 0 || len(pl) != 197 {
			t.Fatalf("qos 0 publish = %q %d %d bytes", tp, qos, len(pl))
		}
		if pid, reason, ok := pubackOf(got[3]); !ok || pid != 8 || reason != 0x99 {
			t.Fatalf("v5 puback = %d %#x", pid, reason)
		}
		if tp, pid, _, pl, ok := publishOf(got[4], true); !ok || tp != "a/b" || pid != 7 || string(pl) != "21.5" {
			t.Fatalf("v5 publish = %q %d %q", tp, pid, pl)
		}
	}
}
