//go:build !nopubsub

package main

import (
	"github.com/edgegate/edgegate/uplink"
	"github.com/edgegate/edgegate/uplink/pubsubsink"
)

// pubsubSink is the Google Cloud Pub/Sub sink. It is most of the binary's size (≈9 MB of
// 21 MB for linux/arm64, see BENCHMARKS.md): build with -tags nopubsub to leave it out.
func pubsubSink() (uplink.SinkType, bool) { return pubsubsink.Type(), true }
