package buffer_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/internal/gatewaytest"
)

// childEnv names the config a re-executed test binary runs the real gateway on (the kill -9
// loop); childExecEnv, when set, is a program the child is run through (make test-arm sets
// qemu-aarch64-static, since binfmt cannot start an arm64 binary here).
const (
	childEnv     = "EDGEGATE_BUFFER_TEST_CHILD"
	childExecEnv = "EDGEGATE_TEST_EXEC"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(gatewaytest.Child(path, gateway.Options{}))
	}
	goleak.VerifyTestMain(m,
		// Badger's and ristretto's package-level goroutines outlive every DB.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/badger/v4.(*DB).monitorCache"),
		// paho's and mochi's connection goroutines linger briefly after Disconnect/Close.
		goleak.IgnoreAnyFunction("github.com/eclipse/paho%2emqtt%2egolang.(*client).Disconnect"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}
