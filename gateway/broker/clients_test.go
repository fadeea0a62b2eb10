package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
)

// conn5 is an MQTT 5 client (eclipse/paho.golang) on one transport.
type conn5 struct {
	c      *paho.Client
	msgs   chan *paho.Publish
	disc   chan *paho.Disconnect
	closed atomic.Bool
}

type login struct {
	clientID, user, pass string
	will                 *paho.WillMessage
	persistent           uint32 // session expiry interval (s); 0: the session ends with the connection
}

// connect5 opens an MQTT 5 session over conn. It returns the CONNACK reason code; on a
// refusal the client is already closed.
func connect5(t *testing.T, conn net.Conn, l login) (*conn5, byte, error) {
	t.Helper()
	c5 := &conn5{msgs: make(chan *paho.Publish, 1000), disc: make(chan *paho.Disconnect, 1)}
	c5.c = paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(p paho.PublishReceived) (bool, error) {
			select {
			case c5.msgs <- p.Packet:
			default:
			}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c5.disc <- d:
			default:
			}
		},
		OnClientError: func(error) {},
		PacketTimeout: 5 * time.Second,
	})
	cp := &paho.Connect{ClientID: l.clientID, KeepAlive: 30, CleanStart: true, WillMessage: l.will}
	if l.persistent > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &l.persistent}
	}
	if l.user != "" {
		cp.Username, cp.UsernameFlag = l.user, true
	}
	if l.pass != "" {
		cp.Password, cp.PasswordFlag = []byte(l.pass), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c5.c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		if ca != nil {
			return nil, ca.ReasonCode, err
		}
		return nil, 0xff, err
	}
	t.Cleanup(c5.close)
	return c5, ca.ReasonCode, nil
}

func (c *conn5) close() {
	if c.closed.CompareAndSwap(false, true) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = c.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		select {
		case <-c.c.Done():
		case <-ctx.Done():
		}
	}
}

// publish sends one message and returns the reason code of its PUBACK (QoS 1) or PUBREC
// (QoS 2); QoS 0 returns 0.
func (c *conn5) publish(t *testing.T, topic string, qos byte, payload string) (byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
	if r != nil {
		return r.ReasonCode, nil
	}
	return 0xff, err
}

// subscribe returns the SUBACK reason code of each filter.
func (c *conn5) subscribe(t *testing.T, filters ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sa, err := c.c.Subscribe(ctx, s)
	if sa == nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	return sa.Reasons
}

// next waits for a delivered message.
func (c *conn5) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message delivered")
		return nil
	}
}

// none checks that no message arrives for a short while.
func (c *conn5) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.msgs:
		t.Fatalf("unexpected message on %q", m.Topic)
	case <-time.After(d):
	}
}

// dialConnect5 dials listener and logs in; it fails the test on a transport error.
func (e *env) connect5(t *testing.T, listener string, l login) (*conn5, byte) {
	t.Helper()
	conn, err := e.dial(t, listener, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", listener, err)
	}
	c, code, err := connect5(t, conn, l)
	if err != nil && code == 0xff {
		t.Fatalf("connect over %s: %v", listener, err)
	}
	return c, code
}

// user logs in as a test user over TCP and fails the test unless accepted.
func (e *env) user(t *testing.T, name, clientID string) *conn5 {
	t.Helper()
	c, code := e.connect5(t, "tcp", login{clientID: clientID, user: name, pass: password(name)})
	if code != 0 || c == nil {
		t.Fatalf("login %s: code %#x", name, code)
	}
	return c
}

// connect3 opens an MQTT 3.1.1 session (eclipse/paho.mqtt.golang) on one of the env's
// listeners.
func (e *env) connect3(t *testing.T, listener string, l login, cert *tls.Certificate) (paho3.Client, error) {
	t.Helper()
	scheme := map[string]string{"tcp": "tcp://", "tls": "ssl://", "mtls": "ssl://", "ws": "ws://", "wss": "wss://"}[listener]
	url := scheme + e.addr[listener]
	if strings.HasPrefix(scheme, "ws") {
		url += "/mqtt"
	}
	tc := &tls.Config{RootCAs: e.pki.pool, ServerName: "127.0.0.1"}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	o := paho3.NewClientOptions().AddBroker(url).SetClientID(l.clientID).SetUsername(l.user).SetPassword(l.pass).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetTLSConfig(tc).
		SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second).SetCleanSession(true)
	c := paho3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

// publish3 publishes and reports whether the PUBACK came within wait.
func publish3(c paho3.Client, topic string, qos byte, payload string, wait time.Duration) (acked bool, err error) {
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(wait) {
		return false, nil
	}
	return tok.Error() == nil, tok.Error()
}

func fmtCodes(b []byte) string {
	var s []string
	for _, c := range b {
		s = append(s, fmt.Sprintf("%#x", c))
	}
	return strings.Join(s, ",")
}
