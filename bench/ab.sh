#!/usr/bin/env bash
# A/B of the request path: canaryd built at two revisions, in front of the
# same nginx backend, measured in one run with interleaved rounds (A, B,
# A, B, ...) so that the machine's drift falls on both alike.
#   ./bench/ab.sh BASE [NEW]            # NEW defaults to the work tree
#   BENCH_DURATION=8s BENCH_ROUNDS=5 BENCH_CONNS=64 ./bench/ab.sh e6496cc
#   BENCH_TLS=1 ./bench/ab.sh d0c53ad   # over TLS keep-alive (a fresh ECDSA P-256 certificate)
# Layout as bench/run.sh: wrk on core 0, the proxy and nginx on core 1.
# Prints the median req/s, p99 and CPU per request of each side, and the
# ratio B/A. Not part of CI. Needs wrk and nginx (installs them as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
BASE=${1:?usage: bench/ab.sh BASE_REVISION [NEW_REVISION]}
NEW=${2:-}
DURATION=${BENCH_DURATION:-8s}
ROUNDS=${BENCH_ROUNDS:-5}
CONNS=${BENCH_CONNS:-64}
TLS=${BENCH_TLS:-}
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v wrk >/dev/null || { echo "bench/ab.sh: wrk is needed (apt-get install wrk)" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
LOAD_CPU=0 PROXY_CPU=1
[ "$(nproc)" -ge 2 ] || { LOAD_CPU=0; PROXY_CPU=0; }
P="taskset -c $PROXY_CPU"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "$work" 2>/dev/null || true
  wait 2>/dev/null || true
  git worktree remove --force "$work/src-a-bin" 2>/dev/null || true
  [ -z "$NEW" ] || git worktree remove --force "$work/src-b-bin" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

build() { # revision (empty: the work tree), output
  if [ -z "$1" ]; then go build -o "$2" ./cmd/canaryd; return; fi
  local dir="$work/src-$(basename "$2")"
  git worktree add --detach -q "$dir" "$1"
  (cd "$dir" && go build -o "$2" ./cmd/canaryd)
}
echo "building A ($BASE) and B (${NEW:-work tree})"
build "$BASE" "$work/a-bin"
build "$NEW" "$work/b-bin"

body=$(printf 'x%.0s' $(seq 127))
sed "s|@DIR@|$work|g; s|@BODY@|$body|" bench/peers/nginx-backend.conf > "$work/nginx-backend.conf"
$P "$NGINX" -c "$work/nginx-backend.conf" & pids+=($!)
if [ -n "$TLS" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
    -keyout "$work/bench.key" -out "$work/bench.crt" 2>/dev/null
fi
scheme=http; [ -z "$TLS" ] || scheme=https
declare -A port pid
port[a]=18200; port[b]=18201
for side in a b; do
  sed "s|@LISTEN@|127.0.0.1:${port[$side]}|; s|@STATE@|$work/state-$side|" bench/peers/canaryd.yaml > "$work/$side.yaml"
  [ -z "$TLS" ] || echo "tls: { cert_file: $work/bench.crt, key_file: $work/bench.key }" >> "$work/$side.yaml"
  $P "$work/$side-bin" run --config "$work/$side.yaml" --log-level warn & pids+=($!); pid[$side]=$!
done
for p in 18001 18200 18201; do
  for i in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo -e "side\tround\trps\tp99\trequests\tcpu_ticks" > "$work/ab.tsv"
for r in $(seq "$ROUNDS"); do
  for side in a b; do
    before=$(ticks "${pid[$side]}")
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$scheme://127.0.0.1:${port[$side]}/")
    after=$(ticks "${pid[$side]}")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    echo -e "$side\t$r\t$rps\t$p99\t$reqs\t$((after - before))" >> "$work/ab.tsv"
    echo "round $r $side: $rps req/s, p99 $p99"
  done
done
hz=$(getconf CLK_TCK)
awk -F'\t' -v hz="$hz" -v base="$BASE" -v new="${NEW:-work tree}" '
NR > 1 { rps[$1] = rps[$1] " " $3; cpu[$1] = cpu[$1] " " (1e6 * $6 / hz / $5) }
function median(s,   a, n, i, j, t) {
  n = split(s, a, " ")
  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
END {
  ra = median(rps["a"]); rb = median(rps["b"]); ca = median(cpu["a"]); cb = median(cpu["b"])
  printf "A %s: median %.0f req/s, %.1f us CPU per request\n", base, ra, ca
  printf "B %s: median %.0f req/s, %.1f us CPU per request\n", new, rb, cb
  printf "B/A: %.3f req/s, %.3f CPU per request\n", rb / ra, cb / ca
}' "$work/ab.tsv"
cat "$work/ab.tsv"
