// Package builtin lists the sensor drivers and uplink sinks edgegate is built with, in the
// order validate reports them: the daemon's registry and the tests' share it.
package builtin

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

// Registry returns every driver and sink. pubsub is the Pub/Sub sink's type when the
// binary has it; otherwise pubsub names it and why names the reason validate gives.
func Registry(pubsub uplink.SinkType, ok bool, why string) config.Registry {
	r := config.Registry{
		Sensors: []sensors.DriverType{
			sim.Type(), bmx280.BME280(), bmx280.BMP280(), ds18b20.Type(), ads1115.Type(), gpiosensor.Type(), cputemp.Type(),
		},
		Sinks:   []uplink.SinkType{mqttsink.Type(), httpsink.Type()},
		Omitted: map[string]string{},
	}
	if ok {
		r.Sinks = append(r.Sinks, pubsub)
	} else {
		r.Omitted[pubsub.Name] = why
	}
	r.Sinks = append(r.Sinks, filesink.Type())
	return r
}
