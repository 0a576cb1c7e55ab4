#!/usr/bin/env bash
# Runs the identical-build end-to-end test N times (default 10): two
# stable instances and one canary of the same third-party server (Python's
# http.server, nginx), 50 requests a second, another process keeping a core
# busy; every run must promote. CI runs it once, in scripts/test.sh.
#   ./scripts/identical-builds.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
n="${1:-10}"
go test -count="$n" -timeout 0 -run '^TestIdenticalBuildIsPromoted$' -v ./cmd/canaryd 2>&1 |
  grep --line-buffered -E 'promoted after|was (rolled_back|paused)|^ *--- (PASS|FAIL): TestIdenticalBuildIsPromoted/' | tee /dev/stderr |
  awk '/^ *--- PASS/ {p++} /^ *--- FAIL/ {f++} END {printf "%d passed, %d failed\n", p, f; exit f > 0}'
