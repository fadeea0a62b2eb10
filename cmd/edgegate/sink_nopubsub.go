//go:build nopubsub

package main

import "github.com/edgegate/edgegate/uplink"

// pubsubSink: this binary was built with -tags nopubsub.
func pubsubSink() uplink.SinkFactory { return nil }
