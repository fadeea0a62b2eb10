#!/usr/bin/env bash
# Issue 20's memory (goal 2), an old build and this one alternately in one session:
# BenchmarkMemory (internal/loadgen: the daemon with one pipeline and one file uplink, as
# BenchmarkCPUPerReading) at 10k msg/s QoS 1 (100 publishers) and QoS 0 (20 devices), and
# overloaded (100 QoS 1 publishers with 1000 in flight each, 20 QoS 0 devices, as fast as
# they go), each without GOMEMLIMIT and with the systemd unit's, LOADGEN_SECONDS (default
# 20) per run; a heap profile of each daemon at its load's end; then where the new build's
# heap is when overloaded (QoS 0, no GOMEMLIMIT).
# Usage: scripts/memory.sh [OLD_REV]   (OLD_REV must have the benchmark; default a8fb7b5)
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:-a8fb7b5}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out/src-old" "$out/old" "$out/new"
git archive "$old" | tar -x -C "$out/src-old"
(cd "$out/src-old" && go test -c -o "$out/old.test" ./internal/loadgen/)
go test -c -o "$out/new.test" ./internal/loadgen/
for load in ${LOADS:-qos0-flood qos1-flood qos1-10k qos0-10k}; do
	for b in old new; do
		dir=internal/loadgen # each build reads its own systemd unit from ../../systemd
		[ "$b" = old ] && dir="$out/src-old/internal/loadgen"
		(cd "$dir" && LOADGEN_SECONDS=${LOADGEN_SECONDS:-20} LOADGEN_LOADS=$load LOADGEN_HEAPPROFILE="$out/$b" \
			"$out/$b.test" -test.run '^$' -test.bench Memory -test.benchtime 1x) |
			grep -E '^(Benchmark|--- FAIL)|mem_test' | sed "s/^/$b: /" || true
	done
done
echo "heap profiles in $out/{old,new}/heap-<load>-<limit>.pprof"
go tool pprof -sample_index=inuse_space -top -nodecount=10 "$out/new.test" "$out/new/heap-qos0-flood-none.pprof" 2>/dev/null | sed -n '4,16p'
