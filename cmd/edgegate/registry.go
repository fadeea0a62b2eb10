package main

import (
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/internal/builtin"
)

// registry lists what this binary is built with: every command (run, validate, replay)
// checks configs against it, so validate accepts exactly what run starts.
func registry() config.Registry {
	t, ok := pubsubSink()
	return builtin.Registry(t, ok, "built with -tags nopubsub")
}
