package gatewaytest

import (
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/sensors"
	"github.com/edgegate/edgegate/sensors/ads1115"
	"github.com/edgegate/edgegate/sensors/bmx280"
	"github.com/edgegate/edgegate/sensors/cputemp"
	"github.com/edgegate/edgegate/sensors/ds18b20"
	"github.com/edgegate/edgegate/sensors/gpiosensor"
	"github.com/edgegate/edgegate/sensors/sim"
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/filesink"
	"github.com/edgegate/edgegate/uplink/httpsink"
	"github.com/edgegate/edgegate/uplink/mqttsink"
)

// Registry is the registry of a -tags nopubsub binary, in cmd/edgegate's order: what tests
// load configs with (cmd/edgegate builds the daemon's own). The Pub/Sub sink is left out
// because its dependencies start goroutines at init, which the goleak checks of the
// packages using gatewaytest would report; uplink's pubsub tests build their own.
func Registry() config.Registry {
	return config.Registry{
		Sensors: []sensors.DriverType{
			sim.Type(), bmx280.BME280(), bmx280.BMP280(), ds18b20.Type(), ads1115.Type(), gpiosensor.Type(), cputemp.Type(),
		},
		Sinks:   []uplink.SinkType{mqttsink.Type(), httpsink.Type(), filesink.Type()},
		Omitted: map[string]string{"pubsub": "left out of gatewaytest.Registry"},
	}
}

// Load loads the config at path with Registry.
func Load(path string) (*config.Config, error) { return config.Load(path, Registry()) }

// Parse parses a config with Registry.
func Parse(file string, data []byte) (*config.Config, error) {
	return config.Parse(file, data, Registry())
}
