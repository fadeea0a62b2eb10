//go:build nopubsub

package main

import "github.com/edgegate/edgegate/uplink"

// pubsubSink: this binary was built with -tags nopubsub; the type's name is kept so that
// validate says why a pubsub uplink is refused.
func pubsubSink() (uplink.SinkType, bool) { return uplink.SinkType{Name: "pubsub"}, false }
