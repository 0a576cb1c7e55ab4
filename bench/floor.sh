#!/usr/bin/env bash
# Where a proxied request's CPU goes, against net/http's floor: the bare
# net/http server answering the 128 bytes itself (bench/backend), canaryd,
# and nginx as the proxy, one at a time on core 1 (nginx as the backend of
# both proxies), wrk on core 0, 64 connections. For each: req/s, CPU per
# request (/proc ticks over an 8 s run), syscalls and context switches per
# request (perf stat over the same run), then a call-graph profile of 5 s
# of another run (perf record -g), left in the work directory with the
# report of the functions docs/benchmarks.md's table reads.
#   ./bench/floor.sh            # needs wrk, nginx and perf (root)
#   BASE=1db02a0 ./bench/floor.sh   # canaryd built at BASE too, measured the same way
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
for c in wrk perf; do command -v $c >/dev/null || { echo "bench/floor.sh: $c is needed" >&2; exit 1; }; done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
work=$(mktemp -d)
echo "work directory: $work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pkill -f "$work/" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
go build -o "$work/canaryd" ./cmd/canaryd
if [ -n "${BASE:-}" ]; then
  git worktree add --detach -q "$work/src-base" "$BASE"
  (cd "$work/src-base" && go build -o "$work/canaryd-base" ./cmd/canaryd)
  git worktree remove --force "$work/src-base"
fi
go build -o "$work/backend" ./bench/backend
body=$(printf 'x%.0s' $(seq 127))
sed "s|@DIR@|$work|g; s|@BODY@|$body|" bench/peers/nginx-backend.conf > "$work/nginx-backend.conf"
taskset -c 1 "$NGINX" -c "$work/nginx-backend.conf" & pids+=($!)
sed "s|@LISTEN@|127.0.0.1:18210|; s|@STATE@|$work/state|" bench/peers/canaryd.yaml > "$work/canaryd.yaml"
ticks() { local t=0; for p in ${1//,/ }; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
run() { # name port pids (comma-separated)
  local name=$1 port=$2 P=$3
  for i in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$port/" >/dev/null
  perf stat -e raw_syscalls:sys_enter,context-switches -p "$P" -o "$work/$name.stat" -- sleep 8 >/dev/null 2>&1 &
  local S=$! before after reqs sys cs
  before=$(ticks "$P")
  taskset -c 0 wrk -t1 -c64 -d8s "http://127.0.0.1:$port/" > "$work/$name.wrk"
  after=$(ticks "$P")
  wait $S
  reqs=$(awk '/requests in/ {print $1}' "$work/$name.wrk")
  sys=$(awk '/raw_syscalls/ {gsub(",","",$1); print $1}' "$work/$name.stat")
  cs=$(awk '/context-switches/ {gsub(",","",$1); print $1}' "$work/$name.stat")
  awk -v n="$name" -v rps="$(awk '/Requests\/sec/ {print $2}' "$work/$name.wrk")" -v t=$((after - before)) -v r="$reqs" \
    -v hz="$(getconf CLK_TCK)" -v s="$sys" -v c="$cs" \
    'BEGIN {printf "%s: %s req/s, %.1f us CPU per request, %.2f syscalls and %.2f context switches per request\n", n, rps, 1e6*t/hz/r, s/r, c/r}'
  taskset -c 0 wrk -t1 -c64 -d7s "http://127.0.0.1:$port/" >/dev/null &
  local W=$!
  sleep 1
  perf record -F 2000 -g -p "$P" -o "$work/$name.data" -- sleep 5 >/dev/null 2>&1
  wait $W
  perf report -i "$work/$name.data" --children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" |
    grep -E '\] (net/http\.\(\*conn\)\.(serve|readRequest)|net/http\.\(\*response\)\.finishRequest|net/http\.serverHandler\.ServeHTTP|canaryd/proxy\.\(\*state\)\.RoundTrip|canaryd/proxy/internal/h1\.\(\*conn\)\.stale)( |$)' > "$work/$name.parts" || true
  sed 's/^/    /' "$work/$name.parts"
}
taskset -c 1 "$work/backend" --listen 127.0.0.1:18500 & B=$!; pids+=($B)
run nethttp 18500 "$B"; kill "$B"
taskset -c 1 "$work/canaryd" run --config "$work/canaryd.yaml" --log-level warn & C=$!; pids+=($C)
run canaryd 18210 "$C"; kill "$C"
if [ -n "${BASE:-}" ]; then
  sleep 0.5
  taskset -c 1 "$work/canaryd-base" run --config "$work/canaryd.yaml" --log-level warn & C=$!; pids+=($C)
  run "canaryd-$BASE" 18210 "$C"; kill "$C"
fi
sed "s|@DIR@|$work|g" bench/peers/nginx-proxy.conf > "$work/nginx-proxy.conf"
taskset -c 1 "$NGINX" -c "$work/nginx-proxy.conf" & NP=$!; pids+=($NP)
sleep 1
run nginx 18300 "$(pgrep -P "$NP" | paste -sd,)"
