package broker

import (
	"crypto/tls"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
)

// TestTransports runs an MQTT 5 and an MQTT 3.1.1 client over every listener type — TCP,
// TLS, mutual TLS, WebSocket, secure WebSocket: log in, subscribe, publish at QoS 1, get
// the PUBACK and the message back; the reading is in the store.
func TestTransports(t *testing.T) {
	e := newEnv(t, nil)
	want := map[string]bool{}
	for _, ln := range listenerNames {
		var cert *tls.Certificate
		if ln == "mtls" {
			cert = &e.pki.client
		}
		t.Run("v5/"+ln, func(t *testing.T) {
			conn, err := e.dial(t, ln, cert)
			if err != nil {
				t.Fatal(err)
			}
			c, code, err := connect5(t, conn, login{clientID: "v5-" + ln, user: "dev-1", pass: "dev-1-pw"})
			if code != 0 {
				t.Fatalf("CONNACK %#x %v", code, err)
			}
			topic := "devices/dev-1/v5-" + ln
			if codes := c.subscribe(t, topic); codes[0] != 1 {
				t.Fatalf("SUBACK %s", fmtCodes(codes))
			}
			if code, err := c.publish(t, topic, 1, `{"value": 5}`); code != 0 {
				t.Fatalf("PUBACK %#x %v", code, err)
			}
			if m := c.next(t); m.Topic != topic {
				t.Errorf("got %s", m.Topic)
			}
			want["dev-1/v5-"+ln] = true
		})
		t.Run("v3/"+ln, func(t *testing.T) {
			c, err := e.connect3(t, ln, login{clientID: "v3-" + ln, user: "dev-1", pass: "dev-1-pw"}, cert)
			if err != nil {
				t.Fatal(err)
			}
			topic := "devices/dev-1/v3-" + ln
			got := make(chan string, 1)
			tok := c.Subscribe(topic, 1, func(_ paho3.Client, m paho3.Message) { got <- m.Topic() })
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("subscribe: %v", tok.Error())
			}
			if acked, err := publish3(c, topic, 1, `{"value": 3}`, 5*time.Second); !acked {
				t.Fatalf("no PUBACK: %v", err)
			}
			select {
			case tp := <-got:
				if tp != topic {
					t.Errorf("got %s", tp)
				}
			case <-time.After(5 * time.Second):
				t.Error("message not delivered back")
			}
			want["dev-1/v3-"+ln] = true
		})
	}
	for _, r := range e.records(t) {
		delete(want, r.Series)
	}
	if len(want) > 0 {
		t.Errorf("not in the store: %v", want)
	}
}

// TestMutualTLS: the mutual TLS listener refuses clients without a certificate, or with one
// from a CA it does not trust, before any MQTT is spoken.
func TestMutualTLS(t *testing.T) {
	e := newEnv(t, nil)
	for name, cert := range map[string]*tls.Certificate{"no certificate": nil, "untrusted CA": &e.pki.otherClient} {
		t.Run(name, func(t *testing.T) {
			conn, err := e.dial(t, "mtls", cert)
			if err == nil {
				_, code, err := connect5(t, conn, login{clientID: "m", user: "dev-1", pass: "dev-1-pw"})
				if err == nil {
					t.Fatalf("connected (CONNACK %#x)", code)
				}
			}
			if _, err := e.connect3(t, "mtls", login{clientID: "m3", user: "dev-1", pass: "dev-1-pw"}, cert); err == nil {
				t.Fatal("3.1.1 client connected")
			}
		})
	}
}
