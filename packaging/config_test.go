package packaging

import (
	"testing"

	"github.com/edgegate/edgegate/internal/gatewaytest"
)

// TestShippedConfigValid checks the config the package installs on every `make test`;
// TestDebContents checks it again, through the packaged binary, only under make check-dist.
func TestShippedConfigValid(t *testing.T) {
	if _, err := gatewaytest.Load("edgegate.yaml"); err != nil {
		t.Fatalf("packaging/edgegate.yaml: %v", err)
	}
}
