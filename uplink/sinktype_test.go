package uplink_test

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/edgegate/edgegate/internal/conf"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/httpsink"
)

// nilSink is a sink type whose constructor fails with a typed nil.
type nilSink struct{ uplink.Sink }

type plainConfig struct{}

func (*plainConfig) Validate(*uplink.Config, *conf.Reporter) {}

// NewSinkType sets a config's defaults when it has some, and a failed constructor's typed
// nil never reaches the caller as a non-nil Sink.
func TestNewSinkType(t *testing.T) {
	if c := httpsink.Type().NewConfig().(*httpsink.Config); c.Compression != "none" {
		t.Fatalf("http sink config without its defaults: %+v", c)
	}
	failed := errors.New("refused")
	typ := uplink.NewSinkType[plainConfig]("plain", func(*uplink.Config, string, *slog.Logger) (*nilSink, error) { return nil, failed })
	if _, ok := typ.NewConfig().(*plainConfig); !ok || typ.Name != "plain" {
		t.Fatalf("NewConfig: %T, name %q", typ.NewConfig(), typ.Name)
	}
	s, err := typ.New(&uplink.Config{}, "gw", slog.Default())
	if !errors.Is(err, failed) || s != nil {
		t.Fatalf("New: %v, %v; want the error and a nil Sink", s, err)
	}
}
