# canaryd's make targets. Every one runs go with GOTOOLCHAIN=auto unless
# the caller chose a GOTOOLCHAIN: go.mod names the toolchain (docs/tls.md).
#   make build        ./canaryd for this machine
#   make install      go install ./cmd/canaryd (into $(go env GOPATH)/bin)
#   make test-short   the fast lane: go test -short ./... (about a minute)
#   make test         every test, as CI runs them (scripts/test.sh)
#   make dist         static release binaries, versioned, with SHA-256 sums:
#                     dist/canaryd-VERSION-OS-ARCH and dist/SHA256SUMS
#   make dist PLATFORMS=linux/arm64   only some platforms
export GOTOOLCHAIN ?= auto
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
PLATFORMS ?= linux/amd64 linux/arm64 darwin/arm64
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build install test test-short dist clean

build:
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o canaryd ./cmd/canaryd

install:
	CGO_ENABLED=0 go install -trimpath -ldflags "$(LDFLAGS)" ./cmd/canaryd

test:
	./scripts/test.sh

test-short:
	go test -short ./...

# Static (CGO_ENABLED=0), reproducible paths (-trimpath), the version in
# `canaryd version`. The sums are of the files as named in dist/.
dist:
	rm -rf dist && mkdir -p dist
	for p in $(PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; \
	  echo "building $$os/$$arch"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch go build -trimpath -ldflags "$(LDFLAGS)" \
	    -o dist/canaryd-$(VERSION)-$$os-$$arch ./cmd/canaryd || exit 1; \
	done
	cd dist && sha256sum canaryd-* > SHA256SUMS
	@cat dist/SHA256SUMS

clean:
	rm -rf dist canaryd
