#!/usr/bin/env bash
# Runs every test of canaryd, as CI does. On a fresh machine it needs Go
# (1.26 or later) and a C compiler for -race; it fetches Go modules itself, and
# installs what the end-to-end tests run against (Debian's prometheus,
# chromium, curl, etcd-server, haproxy, python3, nginx, dnsmasq-base,
# openssl, influxdb and util-linux packages) with
# apt-get when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# go.mod needs Go 1.26.9 or later (the HTTP/2 server fix of GO-2026-6617,
# docs/tls.md) and names go1.27.3 as its toolchain. A Go install's own
# default is often GOTOOLCHAIN=local, which refuses rather than fetches it:
# unless the caller chose a GOTOOLCHAIN, let go fetch the one go.mod names.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need_apt+=(dnsmasq-base)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v influxd >/dev/null 2>&1 || need_apt+=(influxdb)
command -v prlimit >/dev/null 2>&1 || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
    echo "scripts/test.sh: ${need_apt[*]} missing and not root; install with: apt-get install ${need_apt[*]}" >&2; exit 1
  fi
  echo "installing ${need_apt[*]} (Debian packages) for the end-to-end tests"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# With the packages in place, tests that need them fail instead of skipping.
export CANARYD_REQUIRE_PROMETHEUS=1 CANARYD_REQUIRE_CHROMIUM=1 CANARYD_REQUIRE_CURL=1 CANARYD_REQUIRE_ETCD=1 CANARYD_REQUIRE_HAPROXY=1 CANARYD_REQUIRE_PYTHON=1 CANARYD_REQUIRE_NGINX=1 CANARYD_REQUIRE_DNSMASQ=1 CANARYD_REQUIRE_OPENSSL=1 CANARYD_REQUIRE_PRLIMIT=1 CANARYD_REQUIRE_INFLUXDB=1

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "go vet"
go vet ./...
# One line per package as each finishes, the whole output of a failure.
# (go test -short ./... is the fast lane: about a minute, without the demos,
# the soak, Prometheus, the browser and the other long tests.)
echo "go test -race ./... (a line per package as it finishes)"
go build -o "${TMPDIR:-/tmp}/canaryd-testprogress" ./internal/testprogress
go test -race -count=1 -timeout 20m -json ./... | "${TMPDIR:-/tmp}/canaryd-testprogress"
