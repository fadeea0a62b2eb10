# edgegate — see README.md. Every target works on a fresh machine with Go 1.26.
GO       ?= go
BIN      := bin/edgegate
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PKGS     := ./...
# 64-bit only: Badger v4 loses keys or panics on 32-bit targets (SPEC §6).
PLATFORMS := linux/arm64 linux/amd64

.PHONY: all build run test test-short lint cross bench clean fuzz-short

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
# runs their seed corpora. CI runs this after the tests.
FUZZTIME ?= 10s
fuzz-short:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
		dir=./$$(dirname $${f#./}); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "fuzz $$dir $$t for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$dir; \
		done; \
	done

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

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean:
	rm -rf bin dist
