package main

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

// registry lists what this binary is built with: every command (run, validate, replay)
// checks configs against it, so validate accepts exactly what run starts.
func registry() config.Registry {
	r := config.Registry{
		Sensors: []sensors.DriverType{
			sim.Type(), bmx280.BME280(), bmx280.BMP280(), ds18b20.Type(), ads1115.Type(), gpiosensor.Type(), cputemp.Type(),
		},
		Sinks:   []uplink.SinkType{mqttsink.Type(), httpsink.Type()},
		Omitted: map[string]string{},
	}
	if t, ok := pubsubSink(); ok {
		r.Sinks = append(r.Sinks, t)
	} else {
		r.Omitted[t.Name] = "built with -tags nopubsub"
	}
	r.Sinks = append(r.Sinks, filesink.Type())
	return r
}
