package broker

import (
	"bytes"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegate/edgegate/gateway/config"
)

// authHook decides who may connect. With no users configured, only anonymous access exists,
// and only when the config allows it: mochi refuses every connection without such a hook.
type authHook struct {
	mqtt.HookBase
	allowAnonymous bool
}

func newAuthHook(cfg config.Broker) *authHook {
	return &authHook{allowAnonymous: cfg.AllowAnonymous}
}

func (h *authHook) ID() string { return "edgegate-auth" }

func (h *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return h.allowAnonymous
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return h.allowAnonymous
}
