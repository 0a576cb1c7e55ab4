#!/usr/bin/env bash
# Runs every test of canaryd, as CI does. On a fresh machine it needs Go
# (1.26) and a C compiler for -race; it fetches Go modules itself.
set -euo pipefail
cd "$(dirname "$0")/.."

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
go test -race -count=1 -timeout 20m ./...
