package config

import (
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
	"github.com/edgegate/edgegate/uplink/pubsubsink"
)

// full is the registry of a binary with every driver and sink, in the order cmd/edgegate
// lists them (the order of the messages in testdata).
var full = Registry{
	Sensors: []sensors.DriverType{sim.Type(), bmx280.BME280(), bmx280.BMP280(), ds18b20.Type(), ads1115.Type(), gpiosensor.Type(), cputemp.Type()},
	Sinks:   []uplink.SinkType{mqttsink.Type(), httpsink.Type(), pubsubsink.Type(), filesink.Type()},
}
