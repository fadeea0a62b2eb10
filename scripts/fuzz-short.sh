#!/usr/bin/env bash
# Runs every fuzz target (func FuzzXxx in any *_test.go) for FUZZTIME each.
#
# Go 1.26's fuzz coordinator can report "context deadline exceeded" when -fuzztime expires
# while a worker is mid-call (golang/go#75804, fixed in Go 1.27): no input failed, none is
# written. Such a run is retried once and then tolerated with a warning. A real finding
# always prints "Failing input written to testdata/fuzz/..." and fails the run.
set -euo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

run() { # dir target
	"$GO" test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" "$1" >"$log" 2>&1
}

spurious() { # the log shows only the coordinator's deadline race
	grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"
}

for f in $(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do
	dir=./$(dirname "${f#./}")
	for t in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
		echo "fuzz $dir $t for $FUZZTIME"
		ok=0
		for attempt in 1 2; do
			if run "$dir" "$t"; then
				ok=1
				break
			fi
			if ! spurious; then
				cat "$log"
				exit 1
			fi
			echo "  attempt $attempt: 'context deadline exceeded' at the fuzztime boundary, no failing input (golang/go#75804)"
		done
		if [ "$ok" = 1 ]; then
			tail -n 2 "$log"
		else
			echo "  WARNING: $t ended twice on the Go 1.26 fuzztime race; no failing input was found"
		fi
	done
done
