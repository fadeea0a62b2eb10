package config

import (
	"fmt"
	"net"
	"strconv"
)

// Broker configures the embedded MQTT broker, the local topic layer (SPEC §2).
type Broker struct {
	Listeners      []Listener `yaml:"listeners"`
	AllowAnonymous bool       `yaml:"allow_anonymous"`
	// MaxPacketBytes bounds an MQTT packet; larger ones are refused before allocation.
	MaxPacketBytes ByteSize `yaml:"max_packet_bytes"`
	// MaxClients bounds concurrent connections.
	MaxClients int `yaml:"max_clients"`
}

// Listener is one socket of the broker.
type Listener struct {
	// Type is tcp.
	Type    string `yaml:"type"`
	Address string `yaml:"address"`
}

func defaultBroker() Broker {
	return Broker{
		Listeners:      []Listener{{Type: "tcp", Address: ":1883"}},
		MaxPacketBytes: 64 << 10,
		MaxClients:     1000,
	}
}

func (l *Listener) setDefaults() { l.Type = "tcp" }

// maxPacketLimit keeps every accepted payload inside one Badger LSM value (see buffer).
const maxPacketLimit = 1 << 20

func (c *Config) validateBroker(v *validator) {
	b := &c.Broker
	if len(b.Listeners) == 0 {
		v.at("broker.listeners", "broker.listeners: at least one listener is needed, e.g. {type: tcp, address: \":1883\"}")
	}
	seen := map[string]int{}
	for i, l := range b.Listeners {
		p := fmt.Sprintf("broker.listeners[%d]", i)
		if !oneOf(l.Type, "tcp") {
			v.at(p+".type", "%s.type %q: expected tcp", p, l.Type)
		}
		if err := checkAddress(l.Address); err != nil {
			v.at(p+".address", "%s.address: %v", p, err)
		}
		if j, dup := seen[l.Address]; dup {
			v.at(p+".address", "%s.address %q is also used by broker.listeners[%d]", p, l.Address, j)
		}
		seen[l.Address] = i
	}
	if !b.AllowAnonymous {
		v.at("broker.allow_anonymous", "broker: allow_anonymous is false and no users are configured, so no device could connect; set allow_anonymous: true on a trusted network")
	}
	if b.MaxPacketBytes < 1024 || b.MaxPacketBytes > maxPacketLimit {
		v.at("broker.max_packet_bytes", "broker.max_packet_bytes %s: expected between 1KiB and 1MiB", b.MaxPacketBytes)
	}
	if b.MaxClients < 1 {
		v.at("broker.max_clients", "broker.max_clients must be at least 1")
	}
}

// checkAddress checks a host:port listen address (host may be empty for all interfaces).
func checkAddress(addr string) error {
	if addr == "" {
		return fmt.Errorf("address is required, e.g. \":1883\" or \"127.0.0.1:1883\"")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. \":1883\" or \"127.0.0.1:1883\")", addr)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("%q: host must be an IP address, localhost or empty", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	return nil
}
