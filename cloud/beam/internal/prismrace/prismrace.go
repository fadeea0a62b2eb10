// Package prismrace recognises a crash of Prism (Beam 2.78.0) that has nothing to do with
// the pipeline, so tests can run the job again instead of failing on a loaded machine.
//
// A stage that the runner executes itself (a GroupByKey) has no SDK worker, and its
// bundle is complete as soon as it starts; but stage.Execute has already started a
// progress ticker (100 ms). When the goroutine is descheduled longer than that before its
// select, the tick can win, and it asks the nil worker for progress:
// runners/prism/internal/stage.go, (*B).Progress → (*W).sendInstruction → nil pointer
// dereference, and the job fails with "panic in stage.Execute bundle processing goroutine".
package prismrace

import "strings"

// Attempts is how many times a test runs a job that keeps failing this way.
const Attempts = 3

// Is reports whether a job's error (or a failed command's output) is that crash.
func Is(msg string) bool {
	return strings.Contains(msg, "panic in stage.Execute bundle processing goroutine") &&
		strings.Contains(msg, "nil pointer dereference") &&
		strings.Contains(msg, ").Progress(")
}
