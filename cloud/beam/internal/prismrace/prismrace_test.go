package prismrace

import "testing"

func TestIs(t *testing.T) {
	// As Prism 2.78.0 reported it in this suite (stack shortened).
	crash := `job job-264 failed:
panic in stage.Execute bundle processing goroutine: runtime error: invalid memory address or nil pointer dereference, stage: &{ID:stage-002 transforms:[e5] primaryInput:n4}
github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism/internal/worker.(*W).sendInstruction(0x0, {0x216c208, 0xfe291e10190}, 0xfe292388000)
github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism/internal/worker.(*B).Progress(0xfe2921b05a0, {0x216c208, 0xfe291e10190}, 0x0)`
	if !Is(crash) {
		t.Error("the progress race not recognised")
	}
	for _, other := range []string{
		`panic in stage.Execute bundle processing goroutine: runtime error: index out of range`,
		`found 1 uses of features unimplemented in prism`,
		`bad test element "x"`,
	} {
		if Is(other) {
			t.Errorf("%q taken for the progress race", other)
		}
	}
}
