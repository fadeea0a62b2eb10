#!/usr/bin/env bash
# Issue 20's goal 4, durable ingest against the same build with the store's writes removed:
# BenchmarkIngestVsNoWrites (internal/loadgen) runs this tree's daemon and the daemon built
# with -tags edgegate_nowrites (buffer/nowrites.go: groups and one fdatasync of a plain file
# per group as usual, nothing written to Badger) side by side, and loads them in turn (paho
# publishers, QoS 1, 100-byte JSON readings, 20 in flight each; 1, 10 and 100 publishers;
# sync: always, then sync: 10ms, where the normal daemon's no-op topic is loaded too at 100
# publishers). ROUNDS rounds (default 5) of MESSAGES readings per load (default 40000).
# Prints every round, then per case the medians and the range of the ratios
# (normal ÷ nowrites; noop-ratio = normal ÷ no-op), then the top of the normal daemon's CPU
# profile with sync: always (PROFILE=0 skips the profiles).
# Usage: scripts/ingest-nowrites.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$(mktemp -d)}
mkdir -p "$out/prof"
go test -c -o "$out/normal.test" ./internal/loadgen/
go test -c -tags edgegate_nowrites -o "$out/nowrites.test" ./internal/loadgen/
prof=()
if [ "${PROFILE:-1}" != 0 ]; then prof=(LOADGEN_CPUPROFILE="$out/prof"); fi
(cd internal/loadgen && env "${prof[@]}" LOADGEN_NOWRITES_BIN="$out/nowrites.test" \
	LOADGEN_ROUNDS="${ROUNDS:-5}" LOADGEN_MESSAGES="${MESSAGES:-40000}" \
	"$out/normal.test" -test.run '^$' -test.bench IngestVsNoWrites -test.benchtime 1x -test.v) |
	grep -E 'round|^Benchmark' | sed -e 's/^ *nowrites_test.go:[0-9]*: //'
if [ "${PROFILE:-1}" != 0 ]; then
	echo "profiles in $out/prof/cpu-{normal,nowrites}-{always,10ms}.pprof"
	go tool pprof -top -nodecount=25 "$out/normal.test" "$out/prof/cpu-normal-always.pprof" 2>/dev/null | sed -n '4,32p'
fi
