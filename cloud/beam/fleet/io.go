package fleet

import (
	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/textio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
)

// WriteFile writes a bounded PCollection of strings to one file, a line each (a local path
// or gs://...). Panes are windowed: they go back to the global window first, so the file
// gets them all, not one window's.
func WriteFile(s beam.Scope, path string, col beam.PCollection) {
	s = s.Scope("fleet.WriteFile")
	textio.Write(s, path, beam.WindowInto(s, window.NewGlobalWindows(), col))
}

// toBytes is what pubsubio.Write takes.
func toBytes(s string) []byte { return []byte(s) }

// Bytes turns strings into the []byte elements pubsubio.Write publishes.
func Bytes(s beam.Scope, col beam.PCollection) beam.PCollection {
	return beam.ParDo(s.Scope("fleet.Bytes"), toBytes, col)
}

func init() {
	register.Function1x1(toBytes)
}
