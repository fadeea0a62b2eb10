package gatewaytest

import (
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/builtin"
	"github.com/edgegate/edgegate/uplink"
)

// Registry is the registry of a -tags nopubsub binary, in cmd/edgegate's order: what tests
// load configs with (cmd/edgegate builds the daemon's own). The Pub/Sub sink is left out
// because its dependencies start goroutines at init, which the goleak checks of the
// packages using gatewaytest would report; uplink's pubsub tests build their own.
func Registry() config.Registry {
	return builtin.Registry(uplink.SinkType{Name: "pubsub"}, false, "left out of gatewaytest.Registry")
}

// Load loads the config at path with Registry.
func Load(path string) (*config.Config, error) { return config.Load(path, Registry()) }

// Parse parses a config with Registry.
func Parse(file string, data []byte) (*config.Config, error) {
	return config.Parse(file, data, Registry())
}
