package uplink_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/internal/clock"
	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/internal/testutil"
	"github.com/edgegate/edgegate/record"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/mqttsink"
)

// recorder keeps the payload of every publish a mochi broker receives.
type recorder struct {
	mqtt.HookBase
	mu       sync.Mutex
	payloads [][]byte
}

func (h *recorder) ID() string           { return "test-recorder" }
func (h *recorder) Provides(b byte) bool { return b == mqtt.OnPublish }
func (h *recorder) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if strings.HasPrefix(pk.TopicName, "$") {
		return pk, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.payloads = append(h.payloads, append([]byte(nil), pk.Payload...))
	return pk, nil
}

func (h *recorder) got() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]byte(nil), h.payloads...)
}

// startTLSMochi starts a mochi broker that requires a client certificate signed by the
// test CA, as AWS IoT Core does, and collects what it receives. (testutil.Upstream is the
// plain-TCP upstream; this one only needs the TLS listener.)
func startTLSMochi(t *testing.T, certs *testutil.Certs) (addr string, got func() [][]byte) {
	t.Helper()
	h := &recorder{}
	srv := mqtt.New(&mqtt.Options{Logger: discard})
	srv.AddHook(new(auth.AllowHook), nil)
	srv.AddHook(h, nil)
	addr = testutil.FreeAddr(t)
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tls", Address: addr, TLSConfig: certs.ServerTLS(t)})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return addr, h.got
}

// TestMQTTMutualTLS: an uplink with a client certificate delivers to a broker that demands
// one; without the certificate the handshake fails and nothing is acknowledged.
func TestMQTTMutualTLS(t *testing.T) {
	certs := testutil.NewCerts(t)
	addr, got := startTLSMochi(t, certs)

	t.Run("without client certificate", func(t *testing.T) {
		s := openStore(t, t.TempDir())
		fill(t, s, "sensors/a/t", 0, 5)
		cfg := uplinkConfig(fmt.Sprintf(`{name: iot, type: mqtt, url: "tls://%s", tls: {ca_file: %q}, batch: {linger: 10ms}, backoff: {min: 10ms, max: 50ms}}`, addr, certs.CAFile))
		sink, err := mqttsink.New(&cfg, "gw", discard)
		own(t, sink)
		if err != nil {
			t.Fatal(err)
		}
		u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
		run(t, u)
		testutil.Eventually(t, 10*time.Second, "refused handshakes", func() bool { return u.Stats().Errors.Load() >= 2 })
		if u.Stats().Records.Load() != 0 || len(got()) != 0 {
			t.Fatal("records delivered without a client certificate")
		}
	})

	t.Run("with client certificate", func(t *testing.T) {
		s := openStore(t, t.TempDir())
		fill(t, s, "sensors/a/t", 0, 25)
		cfg := uplinkConfig(fmt.Sprintf(`{name: iot, type: mqtt, url: "mqtts://%s", tls: {ca_file: %q, cert_file: %q, key_file: %q}, batch: {max_records: 10, linger: 10ms}}`,
			addr, certs.CAFile, certs.ClientCert, certs.ClientKey))
		sink, err := mqttsink.New(&cfg, "gw", discard)
		own(t, sink)
		if err != nil {
			t.Fatal(err)
		}
		u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
		run(t, u)
		testutil.Eventually(t, 10*time.Second, "25 records over mutual TLS", func() bool { return u.Stats().Records.Load() == 25 })
		n := 0
		for _, p := range got() {
			_, recs := testutil.DecodeBatch(t, p)
			n += len(recs)
		}
		if n != 25 {
			t.Errorf("broker got %d records, want 25", n)
		}
	})
}

// TestMQTTMosquittoTLSPasswordGzip: Debian's mosquitto over TLS with a password from a
// file and gzip-compressed batches; a paho subscriber sees every record.
func TestMQTTMosquittoTLSPasswordGzip(t *testing.T) {
	testutil.MosquittoPath(t)
	certs := testutil.NewCerts(t)
	dir := t.TempDir()
	pwdb := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pwdb, "gw-01", "s3cret").CombinedOutput(); err != nil {
		t.Skipf("mosquitto_passwd: %v: %s", err, out)
	}
	// The TLS listener wants the password; a second, plain listener serves the test's
	// subscriber.
	plain := testutil.FreeAddr(t)
	_, plainPort, _ := net.SplitHostPort(plain)
	mq := testutil.StartMosquittoWith(t, fmt.Sprintf("user root\nallow_anonymous false\npassword_file %s\ncafile %s\ncertfile %s\nkeyfile %s\nlistener %s 127.0.0.1\nallow_anonymous true\n",
		pwdb, certs.CAFile, certs.ServerCert, certs.ServerKey, plainPort))
	testutil.Eventually(t, 5*time.Second, "the plain listener", func() bool {
		c, err := net.Dial("tcp", plain)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	_ = mq
	sub := testutil.Collect(t, plain, "edgegate/#")
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)

	s := openStore(t, t.TempDir())
	fill(t, s, "sensors/a/t", 0, 30)
	cfg := uplinkConfig(fmt.Sprintf(`{name: cloud, type: mqtt, url: "tls://%s", username: gw-01, password_file: %q, tls: {ca_file: %q}, compression: gzip, batch: {max_records: 10, linger: 10ms}}`,
		mq.Addr, pw, certs.CAFile))
	sink, err := mqttsink.New(&cfg, "gw", discard)
	own(t, sink)
	if err != nil {
		t.Fatal(err)
	}
	u := uplink.New(cfg, "gw", "raw", record.KindRecords, sink, s, clock.Real{}, discard)
	run(t, u)
	testutil.Eventually(t, 10*time.Second, "30 records acked by mosquitto", func() bool { return u.Stats().Records.Load() == 30 })
	testutil.Eventually(t, 10*time.Second, "3 batches at the subscriber", func() bool { return len(sub.Messages()) == 3 })
	firsts := []uint64{1, 11, 21} // a range starts at its first entry (sequence numbers start at 1)
	for i, m := range sub.Messages() {
		if m.Topic != "edgegate/gw/records" {
			t.Errorf("topic %q", m.Topic)
		}
		b, recs := testutil.DecodeBatch(t, gunzip(t, m.Payload))
		if len(recs) != 10 || b.Batch != record.BatchID("gw", "cloud", "raw", firsts[i], uint64(10*i+10)) {
			t.Errorf("batch %d: %d records, id %s", i, len(recs), b.Batch)
		}
	}

	// A wrong password is refused and nothing is acknowledged.
	os.WriteFile(pw, []byte("wrong\n"), 0o600)
	s2 := openStore(t, t.TempDir())
	fill(t, s2, "sensors/a/t", 0, 5)
	cfg.Backoff.Min, cfg.Backoff.Max = conf.Duration(10*time.Millisecond), conf.Duration(50*time.Millisecond)
	sink2, _ := mqttsink.New(&cfg, "gw", discard)
	own(t, sink2)
	u2 := uplink.New(cfg, "gw", "raw", record.KindRecords, sink2, s2, clock.Real{}, discard)
	run(t, u2)
	testutil.Eventually(t, 10*time.Second, "refused connections", func() bool { return u2.Stats().Errors.Load() >= 2 })
	if u2.Stats().Records.Load() != 0 {
		t.Fatal("acknowledged with a wrong password")
	}
}

func gunzip(t *testing.T, p []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(p))
	if err != nil {
		t.Fatalf("payload is not gzip: %v", err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
