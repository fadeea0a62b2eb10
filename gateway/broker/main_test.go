package broker

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a test starts — the broker's, its listeners', the clients' — must be gone
// when the tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
