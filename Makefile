# edgegate — see README.md. Every target works on a fresh machine with Go 1.26.
GO       ?= go
BIN      := bin/edgegate
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null)
# The commit time: a lower bound for the wall clock (a board without an RTC that boots
# before it knows its clock is wrong).
BUILD_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildEpoch=$(BUILD_EPOCH)
PKGS     := ./...
# 64-bit only: Badger v4 loses keys or panics on 32-bit targets (SPEC §6).
PLATFORMS := linux/arm64 linux/amd64

.PHONY: all build run test test-short test-arm test-board test-board-short lint cross dist check-dist bench clean fuzz-short install uninstall soak soak-short beam-test tour-test

# nfpm builds the .deb packages; run at a pinned version so its large module graph stays
# out of go.mod.
NFPM        ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
# Debian versions must start with a digit: the tag without its v, else 0.0.0+git<commit>.
DEB_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null); \
	if [ -n "$$v" ]; then echo "$${v#v}" | sed 's/-/+/g'; else echo "0.0.0+git$$(git rev-parse --short HEAD 2>/dev/null || echo dev)"; fi)

all: lint test build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/edgegate

# Runs the daemon on the demo config (broker on 127.0.0.1:1883, data under ./data).
run: build
	./$(BIN) run -c configs/demo.yaml

# The whole suite with the race detector. Integration tests that need mosquitto skip when
# it is absent (CI installs it).
test:
	$(GO) test -race -timeout 20m $(PKGS)

# Every fuzz target (func FuzzXxx in any *_test.go) for FUZZTIME each; `make test` already
# runs their seed corpora. CI runs this after the tests. See the script for the Go 1.26
# fuzztime race it tolerates.
FUZZTIME ?= 10s
fuzz-short:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./scripts/fuzz-short.sh

# The cloud side, cloud/beam (its own go.mod, so Apache Beam stays out of the daemon's): the
# conformance suite of edgegate's windowing against Beam's Prism runner, and the fleet job
# over two real daemons. Its tests build ./cmd/edgegate themselves. -v: the suite prints
# what it compared and every gap it met.
beam-test:
	cd cloud/beam && $(GO) vet ./... && $(GO) test -count=1 -timeout 30m -v ./...

# The README tour and the docs' walkthroughs, run as written (internal/doctest): each in a
# fresh copy of the tree, against `make run`'s daemon (or the one it installs) and Debian's
# mosquitto, mosquitto_sub and mosquitto_pub; in network, PID and mount namespaces of its
# own where the kernel allows, so its fixed ports meet nothing else and every process it
# starts ends with it. The operations walkthrough (make install, the service, backup and
# restore) runs as root only. Needs jq, curl, openssl, node (and MQTT.js: npm ci --prefix
# cmd/edgegate/testdata/mqttjs).
tour-test:
	EDGEGATE_TOUR=1 $(GO) test -count=1 -v -timeout 30m -run 'TestMarkers|TestTour|Walkthrough' ./internal/doctest/

test-short:
	$(GO) test -short $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

cross:
	@for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		case $$arch in 386|arm|mips|mipsle|ppc) \
			echo "edgegate does not build for $$p: Badger v4 loses keys or panics on 32-bit targets (SPEC §6); use a 64-bit OS (linux/arm64)" >&2; exit 1;; \
		esac; \
		echo "building $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o bin/edgegate-$$os-$$arch ./cmd/edgegate || exit 1; \
	done

# Static binaries and .deb packages for linux/arm64 and linux/amd64 in dist/, named with the
# version (the tag without its v; see docs/releasing.md), and their SHA256SUMS.
dist:
	rm -rf dist && mkdir -p dist
	@for arch in $(PLATFORMS:linux/%=%); do \
		echo "building dist/edgegate-linux-$$arch"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o dist/edgegate-linux-$$arch ./cmd/edgegate || exit 1; \
		if $(GO) version -m dist/edgegate-linux-$$arch | grep -q edgegate_nowrites; then \
			echo "dist/edgegate-linux-$$arch has the edgegate_nowrites tag (a benchmark baseline that stores nothing): not shipped" >&2; exit 1; fi; \
		sed -e "s/\$${ARCH}/$$arch/g" -e "s/\$${VERSION}/$(DEB_VERSION)/g" packaging/nfpm.yaml > dist/nfpm-$$arch.yaml; \
		$(NFPM) package -f dist/nfpm-$$arch.yaml -p deb -t dist/edgegate_$(DEB_VERSION)_$$arch.deb || exit 1; \
		rm dist/nfpm-$$arch.yaml; \
		mv dist/edgegate-linux-$$arch dist/edgegate_$(DEB_VERSION)_linux_$$arch; \
	done
	cd dist && sha256sum edgegate_* > SHA256SUMS
	@ls -l dist

# Checks the packages `make dist` built: contents (dpkg-deb -c), conffiles, static binaries.
check-dist:
	EDGEGATE_DIST=$(CURDIR)/dist $(GO) test -count=1 -run Deb -v ./packaging/

# The whole unit test suite as linux/arm64 binaries under qemu-user (Debian's
# qemu-user-static). No race detector: it needs cgo, which cross builds leave off. Tests
# that re-run their own binary use EDGEGATE_TEST_EXEC to go through the emulator too.
test-arm:
	@command -v qemu-aarch64-static >/dev/null || { echo "test-arm needs qemu-aarch64-static: apt-get install qemu-user-static" >&2; exit 1; }
	CGO_ENABLED=0 GOARCH=arm64 EDGEGATE_TEST_EXEC=qemu-aarch64-static \
		$(GO) test -exec qemu-aarch64-static -timeout 40m $(PKGS)

# Installs what the .deb installs, laid out the same way under PREFIX (default /usr/local;
# PREFIX=/usr gives the .deb's paths) and DESTDIR (a staging root for packagers). The config
# goes to SYSCONFDIR/edgegate (default /etc, where the unit reads it) and is never
# overwritten. Run as root on the board itself, it also creates the edgegate user and
# reloads systemd; then edit /etc/edgegate/edgegate.yaml and `systemctl enable --now edgegate`.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR    ?=
BINDIR      = $(PREFIX)/bin
UNITDIR     = $(PREFIX)/lib/systemd/system
SYSUSERSDIR = $(PREFIX)/lib/sysusers.d
UDEVDIR     = $(PREFIX)/lib/udev/rules.d
DOCDIR      = $(PREFIX)/share/doc/edgegate

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/edgegate
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed -e 's#/usr/bin/edgegate#$(BINDIR)/edgegate#g' -e 's#/etc/edgegate/#$(SYSCONFDIR)/edgegate/#g' \
		systemd/edgegate.service > $(DESTDIR)$(UNITDIR)/edgegate.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/edgegate.service
	install -D -m 0644 systemd/edgegate.sysusers $(DESTDIR)$(SYSUSERSDIR)/edgegate.conf
	install -D -m 0644 packaging/edgegate.rules $(DESTDIR)$(UDEVDIR)/60-edgegate.rules
	install -D -m 0644 configs/edgegate.yaml $(DESTDIR)$(DOCDIR)/edgegate.yaml.example
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	find docs -type f | while read -r f; do install -D -m 0644 "$$f" "$(DESTDIR)$(DOCDIR)/$$f"; done
	install -D -m 0644 LICENSE $(DESTDIR)$(DOCDIR)/LICENSE
	install -D -m 0644 NOTICE $(DESTDIR)$(DOCDIR)/NOTICE
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/edgegate/edgegate.yaml ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/edgegate/edgegate.yaml"; \
	else \
		install -D -m 0640 packaging/edgegate.yaml $(DESTDIR)$(SYSCONFDIR)/edgegate/edgegate.yaml; \
	fi
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ] && [ -d /run/systemd/system ]; then \
		systemd-sysusers $(SYSUSERSDIR)/edgegate.conf && \
		chgrp edgegate $(SYSCONFDIR)/edgegate/edgegate.yaml && \
		systemctl daemon-reload && \
		{ touch $(UDEVDIR)/60-edgegate.rules; udevadm control --reload-rules && udevadm trigger --action=change --subsystem-match=i2c-dev --subsystem-match=gpio || true; } && \
		echo "edgegate: edit $(SYSCONFDIR)/edgegate/edgegate.yaml, then: systemctl enable --now edgegate"; \
	fi

# Removes what `make install` installed, with the same PREFIX and DESTDIR. The config and
# the buffer (/var/lib/edgegate: unsent data) stay; remove them by hand to purge.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/edgegate $(DESTDIR)$(UNITDIR)/edgegate.service \
		$(DESTDIR)$(SYSUSERSDIR)/edgegate.conf $(DESTDIR)$(UDEVDIR)/60-edgegate.rules
	rm -rf $(DESTDIR)$(DOCDIR)
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
	@echo "kept $(SYSCONFDIR)/edgegate and /var/lib/edgegate (the buffer); remove them to purge"

# The randomized fault soak (internal/soak): a child daemon against devices of every kind,
# flapping and refusing upstreams, kill -9 and SIGTERM at random moments; then every
# acknowledged reading is checked upstream. It prints its seed: SOAK_SEED=<seed> replays the
# schedule. soak-short is the form CI runs.
SOAK_DURATION ?= 10m
soak:
	SOAK_DURATION=$(SOAK_DURATION) $(GO) test -count=1 -v -run TestSoak -timeout 60m ./internal/soak/

soak-short:
	SOAK_DURATION=70s $(GO) test -count=1 -v -run TestSoak -timeout 20m ./internal/soak/

# The emulated board (docs/board.md): Debian 12 arm64 under
# qemu-system-aarch64 (TCG), systemd as PID 1, the arm64 .deb installed with apt. The image
# is built once from Debian's packages into board/.cache (root: debootstrap). test-board
# runs the six checks; test-board-short installs, starts and cuts the power once (CI).
test-board: dist
	GO=$(GO) ./board/run.sh full

test-board-short: dist
	GO=$(GO) ./board/run.sh short

bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m $(PKGS)

clean:
	rm -rf bin dist board/.cache
