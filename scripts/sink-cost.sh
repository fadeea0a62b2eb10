#!/usr/bin/env bash
# What each uplink sink costs: linux/arm64 binary size with and without the Pub/Sub sink,
# and idle RSS of the daemon (native build) with one uplink of each type after it delivered
# one reading to a local stand-in (mosquitto, an HTTP collector, Google's pstest fake).
# Usage: scripts/sink-cost.sh   (needs mosquitto and mosquitto_pub; loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

build() { CGO_ENABLED=0 GOOS=linux GOARCH=$1 go build -trimpath -ldflags '-s -w' ${2:+-tags $2} -o "$3" ./cmd/edgegate; }
build arm64 "" "$tmp/arm64-all"
build arm64 nopubsub "$tmp/arm64-nopubsub"
all=$(stat -c %s "$tmp/arm64-all"); nops=$(stat -c %s "$tmp/arm64-nopubsub")
printf 'linux/arm64 binary: %d bytes with every sink, %d with -tags nopubsub: Pub/Sub adds %d bytes (%.0f%%)\n' \
	"$all" "$nops" $((all - nops)) "$(echo "100*($all-$nops)/$nops" | bc -l)"

build "$(go env GOARCH)" "" "$tmp/edgegate"
build "$(go env GOARCH)" nopubsub "$tmp/edgegate-nopubsub"
go build -o "$tmp/fakecloud" ./internal/tools/fakecloud
"$tmp/fakecloud" -http 127.0.0.1:18080 -pubsub-port 18085 >/dev/null & pids+=($!)
printf 'listener 18883 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n' >"$tmp/mosq.conf"
mosquitto -c "$tmp/mosq.conf" >/dev/null 2>&1 & pids+=($!)
sleep 1

uplink_of() {
	case $1 in
	file) echo "{name: u, type: file, path: $2/out.jsonl, batch: {linger: 100ms}}" ;;
	mqtt) echo '{name: u, type: mqtt, url: "tcp://127.0.0.1:18883", batch: {linger: 100ms}}' ;;
	http) echo '{name: u, type: http, url: "http://127.0.0.1:18080/in", batch: {linger: 100ms}}' ;;
	pubsub) echo '{name: u, type: pubsub, project: proj, topic: "edgegate-{kind}", batch: {linger: 100ms}}' ;;
	esac
}

# delivered prints a count that grows when the uplink of that type delivered something.
delivered() {
	case $1 in
	file) cat "$2"/out.jsonl 2>/dev/null | wc -l ;;
	mqtt) cat "$tmp/mqtt-seen" 2>/dev/null | wc -l ;;
	http) curl -s 127.0.0.1:18080/count | awk '{print $2}' ;;
	pubsub) curl -s 127.0.0.1:18080/count | awk '{print $4}' ;;
	esac
}
mosquitto_sub -p 18883 -h 127.0.0.1 -t 'edgegate/#' >"$tmp/mqtt-seen" & pids+=($!)

port=19000
rss() { # binary type → idle VmRSS in kB, 5 s after one reading went through
	port=$((port + 1))
	local dir="$tmp/run-$1-$2-$port"
	mkdir -p "$dir"
	cat >"$dir/c.yaml" <<YAML
gateway: {id: gw, data_dir: $dir}
broker: {listeners: [{type: tcp, address: "127.0.0.1:$port"}], allow_anonymous: true}
ops: {log: {level: warn}, clock: {mode: trust}}
uplinks: [$(uplink_of "$2" "$dir")]
YAML
	PUBSUB_EMULATOR_HOST=127.0.0.1:18085 "$3" run -c "$dir/c.yaml" 2>"$dir/err" & local p=$!
	sleep 1
	local before after
	before=$(delivered "$2" "$dir")
	mosquitto_pub -p "$port" -h 127.0.0.1 -q 1 -t devices/d1/temperature -m "{\"value\": 21.5, \"ts\": $(date +%s)000}"
	sleep 5
	after=$(delivered "$2" "$dir")
	if [ "$after" = "$before" ]; then echo "edgegate ($1, $2): the reading was not delivered" >&2; exit 1; fi
	local r
	r=$(awk '/VmRSS/ {print $2}' "/proc/$p/status")
	kill "$p"; wait "$p" 2>/dev/null || true
	if [ -s "$dir/err" ]; then echo "edgegate ($1, $2) logged errors:" >&2; cat "$dir/err" >&2; fi
	echo "$r"
}
for typ in file mqtt http pubsub; do
	a=$(rss all "$typ" "$tmp/edgegate")
	if [ "$typ" != pubsub ]; then
		n=$(rss nopubsub "$typ" "$tmp/edgegate-nopubsub")
		echo "idle RSS, one $typ uplink: $a kB (every sink linked), $n kB (-tags nopubsub)"
	else
		echo "idle RSS, one $typ uplink: $a kB"
	fi
done
