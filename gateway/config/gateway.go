package config

import (
	"regexp"

	"github.com/edgegate/edgegate/internal/conf"
)

// Gateway identifies this gateway and where it keeps its data.
type Gateway struct {
	// ID names the gateway in every batch; required.
	ID string `yaml:"id"`
	// DataDir holds the Badger store.
	DataDir string `yaml:"data_dir"`
}

func defaultGateway() Gateway { return Gateway{DataDir: "/var/lib/edgegate"} }

var gatewayIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (c *Config) validateGateway(v *conf.Reporter) {
	switch {
	case c.Gateway.ID == "":
		v.Errorf("gateway.id", "gateway.id is required: it names this gateway in every batch (e.g. gw-01)")
	case !gatewayIDRe.MatchString(c.Gateway.ID):
		v.Errorf("gateway.id", "gateway.id %q: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", c.Gateway.ID)
	}
	if c.Gateway.DataDir == "" {
		v.Errorf("gateway.data_dir", "gateway.data_dir must not be empty")
	}
}
