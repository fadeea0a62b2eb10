package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/sensors/sim"
	"github.com/edgegate/edgegate/uplink/mqttsink"
)

var update = flag.Bool("update", false, "rewrite the .bad.want golden files")

// TestBadConfigs checks every testdata/*.bad.yml against its .bad.want: each expected line
// is one error, FILE:LINE:COL: message, in file order.
func TestBadConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.bad.yml")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(f, ".yml") + ".want")
			if err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(f)
			_, err = Parse(filepath.Base(f), data, full)
			var es conf.Errors
			if !errors.As(err, &es) {
				t.Fatalf("Parse = %v, want config errors", err)
			}
			got := es.Error()
			if *update {
				os.WriteFile(strings.TrimSuffix(f, ".yml")+".want", []byte(got+"\n"), 0o644)
				return
			}
			if strings.TrimSpace(got) != strings.TrimSpace(string(want)) {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestGoodConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.good.yml")
	files = append(files, "../../configs/demo.yaml", "../../configs/edgegate.yaml")
	for _, f := range files {
		if _, err := Load(f, full); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("x.yml", []byte(`
gateway: {id: gw-01}
broker: {allow_anonymous: true}
routes: [{topic: "a/+x"}]
sensors: [{name: s, driver: sim}]
uplinks: [{name: u, type: mqtt, url: "tcp://127.0.0.1:1883"}]
`), full)
	if err != nil {
		t.Fatal(err)
	}
	if c.Gateway.DataDir != "/var/lib/edgegate" || c.Dedup.TTL.D() != 24*time.Hour || c.Unrouted != "forward" {
		t.Errorf("top-level defaults: %+v %+v %q", c.Gateway, c.Dedup, c.Unrouted)
	}
	if l := c.Broker.Listeners; len(l) != 1 || l[0].Address != ":1883" || c.Broker.MaxPacketBytes != 64<<10 {
		t.Errorf("broker defaults: %+v", c.Broker)
	}
	if r := c.Routes[0]; r.Format != "json" || r.Series != "{topic}" {
		t.Errorf("route defaults: %+v", r)
	}
	if s := c.Sensors[0]; s.Interval.D() != 10*time.Second || s.Topic != "sensors/{name}/{metric}" || s.Device.(*sim.Config).Kind != "sine" {
		t.Errorf("sensor defaults: %+v", s)
	}
	u := c.Uplinks[0]
	if m := u.Sink.(*mqttsink.Config); m.ClientID != "gw-01-u" || m.QoS != 1 || u.Batch.MaxRecords != 500 || u.Batch.Linger.D() != time.Second || len(u.Forward) != 1 {
		t.Errorf("uplink defaults: %+v", u)
	}
}

func TestExplicitZeroIsKept(t *testing.T) {
	c, err := Parse("x.yml", []byte(`
gateway: {id: gw-01}
broker: {allow_anonymous: true}
dedup: {ttl: 0}
uplinks: [{name: u, type: file, path: /tmp/x, batch: {linger: 0s}}]
`), full)
	if err != nil {
		t.Fatal(err)
	}
	if c.Dedup.TTL != 0 || c.Uplinks[0].Batch.Linger != 0 {
		t.Errorf("explicit zeros replaced by defaults: ttl %v linger %v", c.Dedup.TTL, c.Uplinks[0].Batch.Linger)
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/many.bad.yml", "../../configs/edgegate.yaml", "../../configs/demo.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("a: &x [*x]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yml", data, full)
		if err == nil && c.Gateway.ID == "" {
			t.Fatal("a config without gateway.id was accepted")
		}
		var es conf.Errors
		if err != nil && !errors.As(err, &es) {
			t.Fatalf("non-positioned error: %v", err)
		}
	})
}

func TestMatchClientID(t *testing.T) {
	for _, c := range []struct {
		pattern, user, id string
		want              bool
	}{
		{"{username}", "dev-1", "dev-1", true},
		{"{username}", "dev-1", "dev-12", false},
		{"{username}-*", "dev-1", "dev-1-a", true},
		{"{username}-*", "dev-1", "dev-1-", true},
		{"{username}-*", "dev-1", "dev-1", false},
		{"%u-*-x", "d", "d-a-b-x", true},
		{"%u-*-x", "d", "d-x", false},
		{"pump-*", "any", "pump-7", true},
		{"*-{username}", "a", "x-a", true},
		{"{username}", "a*b", "aXb", false}, // a '*' in a user name is literal
		{"{username}", "a*b", "a*b", true},
	} {
		if got := MatchClientID(c.pattern, c.user, c.id); got != c.want {
			t.Errorf("MatchClientID(%q, %q, %q) = %v, want %v", c.pattern, c.user, c.id, got, c.want)
		}
	}
}
