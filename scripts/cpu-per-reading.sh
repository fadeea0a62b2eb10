#!/usr/bin/env bash
# Issue 20's CPU per reading, an old build and this one alternately in one session:
# BenchmarkCPUPerReading (internal/loadgen: 20 devices QoS 0, one pipeline with a 10 s
# tumbling count/mean/min/max, one file uplink forwarding agg/#, sync: always) at 2k and
# 10k msg/s, ROUNDS rounds (default 2) of LOADGEN_SECONDS (default 30) per rate and build;
# then the top 10 of the new build's CPU profile at 2k msg/s.
# Usage: scripts/cpu-per-reading.sh [OLD_REV]   (OLD_REV must have the benchmark; default 74eda43)
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:-74eda43}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out/src-old" "$out/old" "$out/new"
git archive "$old" | tar -x -C "$out/src-old"
(cd "$out/src-old" && go test -c -o "$out/old.test" ./internal/loadgen/)
go test -c -o "$out/new.test" ./internal/loadgen/
for i in $(seq "${ROUNDS:-2}"); do
	for b in old new; do
		(cd "$out" && LOADGEN_CPUPROFILE="$out/$b" "$out/$b.test" -test.run '^$' -test.bench CPUPerReading -test.benchtime 1x) |
			grep '^Benchmark' | sed "s/^/$b round $i: /"
	done
done
echo "profiles in $out/{old,new}/cpu-<rate>.pprof (the last round)"
go tool pprof -top -nodecount=10 "$out/new.test" "$out/new/cpu-2000.pprof" 2>/dev/null | sed -n '5,16p'
