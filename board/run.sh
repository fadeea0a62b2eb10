#!/usr/bin/env bash
# make test-board (full) and make test-board-short (short): builds the board's image when
# it is not cached (board/build-image.sh), then runs TestBoard against the arm64 .deb of
# `make dist`. Full: the six checks; short: install and start, one power cut (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-full}
GO=${GO:-go}
CACHE=${BOARD_CACHE:-board/.cache}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd) # go test runs in board/: every path absolute
export BOARD_CACHE=$CACHE

debs=(dist/edgegate_*_arm64.deb)
if [ ${#debs[@]} -ne 1 ] || [ ! -f "${debs[0]}" ]; then
	echo "test-board: want exactly one dist/edgegate_*_arm64.deb (make dist)" >&2
	exit 1
fi
export BOARD_DEB=$PWD/${debs[0]}

start=$(date +%s)
./board/build-image.sh
built=$(date +%s)

if [ "$mode" = full ]; then
	# The upgrade: the same package at a higher version (the binary reports it).
	version=$(dpkg-deb -f "$BOARD_DEB" Version)
	up="$CACHE/upgrade"
	rm -rf "$up" && mkdir -p "$up"
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 "$GO" build -trimpath \
		-ldflags "-s -w -X main.version=${version}+upgrade -X main.commit=$(git rev-parse --short HEAD 2>/dev/null) -X main.buildEpoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)" \
		-o "$up/edgegate-linux-arm64" ./cmd/edgegate
	sed -e "s/\${ARCH}/arm64/g" -e "s/\${VERSION}/${version}+upgrade/g" \
		-e "s|src: dist/edgegate-linux-arm64|src: $up/edgegate-linux-arm64|" packaging/nfpm.yaml >"$up/nfpm.yaml"
	${NFPM:-$GO run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2} package -f "$up/nfpm.yaml" -p deb \
		-t "$up/edgegate_${version}+upgrade_arm64.deb" >/dev/null
	export BOARD_DEB_NEW="$up/edgegate_${version}+upgrade_arm64.deb"
else
	export BOARD_MODE=short
fi

run="$CACHE/run-$mode"
rm -rf "$run" && mkdir -p "$run"
export BOARD_RUN=$run
# QEMU dies with the test (Pdeathsig); this is the second guard, by the pid QEMU wrote.
stop_qemu() {
	if [ -f "$run/qemu.pid" ]; then
		pid=$(cat "$run/qemu.pid" 2>/dev/null || true)
		if [ -n "$pid" ] && grep -q qemu "/proc/$pid/cmdline" 2>/dev/null; then
			kill -9 "$pid" 2>/dev/null || true
		fi
	fi
}
trap stop_qemu EXIT INT TERM
set +e
"$GO" test -count=1 -v -timeout 170m -run '^TestBoard$' ./board/ 2>&1 | tee "$run/test.log"
rc=${PIPESTATUS[0]}
set -e
end=$(date +%s)
echo "test-board ($mode): image $((built - start)) s, checks $((end - built)) s, total $((end - start)) s; logs in $run"
exit "$rc"
