#!/usr/bin/env bash
# Load benchmark: canaryd against direct, a plain httputil proxy, nginx and
# HAProxy, on one machine, and docs/benchmarks.md rewritten with the result.
# Then the front door: TLS keep-alive and full handshakes (wrk over https)
# and HTTP/2 (h2load), canaryd against an httputil TLS baseline and nginx
# with the same certificate and upstreams.
#   ./bench/run.sh                       # 5 rounds of 10 s at 64 and 256 connections
#   BENCH_DURATION=3s BENCH_ROUNDS=1 ./bench/run.sh   # a quick look
# Not part of CI. Needs wrk; uses nginx and HAProxy when installed, and
# installs all three with apt-get when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" # go.mod names go1.27.3 (docs/tls.md)
DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-5}
CONNS=${BENCH_CONNS:-"64 256"}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v wrk >/dev/null || { echo "bench: wrk is needed (apt-get install wrk)" >&2; exit 1; }

# A fair layout on two cores: the load generator on one, the proxy and the
# backend on the other. Go's GOMAXPROCS follows the affinity.
LOAD_CPU=0 PROXY_CPU=1
[ "$(nproc)" -ge 2 ] || { LOAD_CPU=0; PROXY_CPU=0; }
# taskset execs the program, so $! is the program's own pid.
P="taskset -c $PROXY_CPU"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "$work" 2>/dev/null || true # anything started from the work dir (nginx workers too)
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "building"
go build -o "$work/canaryd" ./cmd/canaryd
go build -o "$work/baseline" ./bench/baseline
go build -o "$work/backend" ./bench/backend
go build -o "$work/report" ./bench/report

body=$(printf 'x%.0s' $(seq 127))
# One certificate for every TLS target: ECDSA P-256, as a modern site has.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 \
  -keyout "$work/bench.key" -out "$work/bench.crt" 2>/dev/null
backend="go"
if command -v nginx >/dev/null; then
  backend="nginx"
  sed "s|@DIR@|$work|g; s|@BODY@|$body|" bench/peers/nginx-backend.conf > "$work/nginx-backend.conf"
  $P nginx -c "$work/nginx-backend.conf" & pids+=($!)
else
  $P "$work/backend" --listen 127.0.0.1:18001 & pids+=($!)
  $P "$work/backend" --listen 127.0.0.1:18002 & pids+=($!)
fi
backend_pid=${pids[0]}

sed "s|@LISTEN@|127.0.0.1:18200|; s|@STATE@|$work/state|" bench/peers/canaryd.yaml > "$work/canaryd.yaml"
sed "s|@LISTEN@|127.0.0.1:18210|; s|@STATE@|$work/state-tls|" bench/peers/canaryd.yaml > "$work/canaryd-tls.yaml"
echo "tls: { cert_file: $work/bench.crt, key_file: $work/bench.key }" >> "$work/canaryd-tls.yaml"
declare -A addr pid taddr tpid
addr[direct]=127.0.0.1:18001; pid[direct]=$backend_pid
$P "$work/canaryd" run --config "$work/canaryd.yaml" --log-level warn & pids+=($!); addr[canaryd]=127.0.0.1:18200; pid[canaryd]=$!
$P "$work/baseline" --listen 127.0.0.1:18100 2>"$work/baseline.log" & pids+=($!); addr[httputil]=127.0.0.1:18100; pid[httputil]=$!
# The net/http ceiling: a bare net/http server answering the same 128
# bytes itself, on the proxies' core. No Go proxy can beat it: what
# canaryd does per request is on top of this server's own cost.
$P "$work/backend" --listen 127.0.0.1:18500 & pids+=($!); addr[nethttp]=127.0.0.1:18500; pid[nethttp]=$!
targets="direct nethttp canaryd httputil"
if command -v nginx >/dev/null; then
  sed "s|@DIR@|$work|g" bench/peers/nginx-proxy.conf > "$work/nginx-proxy.conf"
  $P nginx -c "$work/nginx-proxy.conf" & pids+=($!); addr[nginx]=127.0.0.1:18300; pid[nginx]=$!
  targets="$targets nginx"
fi
if command -v haproxy >/dev/null; then
  cp bench/peers/haproxy.cfg "$work/haproxy.cfg"
  $P haproxy -f "$work/haproxy.cfg" -db & pids+=($!); addr[haproxy]=127.0.0.1:18400; pid[haproxy]=$!
  targets="$targets haproxy"
fi

for t in $targets; do
  for i in $(seq 50); do
    (exec 3<>"/dev/tcp/${addr[$t]%:*}/${addr[$t]#*:}") 2>/dev/null && break
    sleep 0.1
  done
done

# CPU ticks (user + system) of a process and its children (nginx's work is
# done by its worker).
ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
echo -e "target\tconns\tround\trps\tp50\tp99\trequests\tcpu_ticks" > "$work/results.tsv"
for r in $(seq "$ROUNDS"); do
  for t in $targets; do
    for c in $CONNS; do
      before=$(ticks "${pid[$t]}")
      out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d"$DURATION" --latency "http://${addr[$t]}/")
      after=$(ticks "${pid[$t]}")
      rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
      reqs=$(awk '/requests in/ {print $1}' <<<"$out")
      p50=$(awk '$1=="50%" {print $2}' <<<"$out")
      p99=$(awk '$1=="99%" {print $2}' <<<"$out")
      echo -e "$t\t$c\t$r\t$rps\t$p50\t$p99\t$reqs\t$((after - before))" >> "$work/results.tsv"
      echo "round $r $t c=$c: $rps req/s, p50 $p50, p99 $p99"
    done
  done
done

# The front door. Each TLS target serves the same certificate in front of
# the same upstreams; the plain targets are stopped first, to leave core 1
# to one proxy at a time.
for t in $targets; do [ "$t" = direct ] || kill "${pid[$t]}" 2>/dev/null || true; done
tls_targets="canaryd httputil"
$P "$work/canaryd" run --config "$work/canaryd-tls.yaml" --log-level warn & pids+=($!); taddr[canaryd]=127.0.0.1:18210; tpid[canaryd]=$!
$P "$work/baseline" --listen 127.0.0.1:18110 --cert "$work/bench.crt" --key "$work/bench.key" 2>"$work/baseline-tls.log" & pids+=($!); taddr[httputil]=127.0.0.1:18110; tpid[httputil]=$!
if command -v nginx >/dev/null; then
  sed "s|@DIR@|$work|g" bench/peers/nginx-proxy-tls.conf > "$work/nginx-proxy-tls.conf"
  $P nginx -c "$work/nginx-proxy-tls.conf" & pids+=($!); taddr[nginx]=127.0.0.1:18310; tpid[nginx]=$!
  tls_targets="$tls_targets nginx"
fi
for t in $tls_targets; do
  for i in $(seq 50); do
    (exec 3<>"/dev/tcp/${taddr[$t]%:*}/${taddr[$t]#*:}") 2>/dev/null && break
    sleep 0.1
  done
done
echo -e "target\tmode\tround\trps\tp99_ms\trequests\tcpu_ticks" > "$work/tls.tsv"
for r in $(seq "$ROUNDS"); do
  for t in $tls_targets; do
    url="https://${taddr[$t]}/"
    before=$(ticks "${tpid[$t]}")
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"$DURATION" --latency "$url")
    after=$(ticks "${tpid[$t]}")
    echo -e "$t\ttls-keepalive\t$r\t$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")\t$(awk '$1=="99%" {print $2}' <<<"$out")\t$(awk '/requests in/ {print $1}' <<<"$out")\t$((after - before))" >> "$work/tls.tsv"
    # A new connection, and so a full handshake, for every request.
    before=$(ticks "${tpid[$t]}")
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c16 -d"$DURATION" --latency -H "Connection: close" "$url")
    after=$(ticks "${tpid[$t]}")
    echo -e "$t\ttls-handshake\t$r\t$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")\t$(awk '$1=="99%" {print $2}' <<<"$out")\t$(awk '/requests in/ {print $1}' <<<"$out")\t$((after - before))" >> "$work/tls.tsv"
    if command -v h2load >/dev/null; then
      # 16 connections of 10 concurrent streams each, ALPN h2.
      before=$(ticks "${tpid[$t]}")
      out=$(taskset -c "$LOAD_CPU" h2load -c16 -m10 -D"${DURATION%s}" "$url" 2>&1)
      after=$(ticks "${tpid[$t]}")
      rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out")
      done_=$(awk '/^requests:/ {print $8}' <<<"$out")
      echo -e "$t\th2\t$r\t$rps\t\t$done_\t$((after - before))" >> "$work/tls.tsv"
    fi
    echo "round $r $t: $(tail -3 "$work/tls.tsv" | cut -f2,4 | tr '\n' ' ')"
  done
done

# Stop the load targets before the Go benchmarks, which want both cores.
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()
echo "go benchmarks"
go test -run '^$' -benchtime=2s \
  -bench 'BenchmarkPick$|BenchmarkProxyPath|BenchmarkBaselinePath|BenchmarkObserve|BenchmarkLeanHead' \
  ./balancer ./proxy ./proxy/internal/h1 ./bench/baseline ./metrics ./health > "$work/gobench.txt"

"$work/report" --results "$work/results.tsv" --ticks "$(getconf CLK_TCK)" --backend "$backend" \
  --duration "$DURATION" --rounds "$ROUNDS" --canaryd "$("$work/canaryd" version)" \
  --gobench "$work/gobench.txt" --tls "$work/tls.tsv" --notes bench/findings.md > "$work/benchmarks.md"
mv "$work/benchmarks.md" docs/benchmarks.md
# The raw numbers stay beside the report, so it can be rebuilt or checked.
mkdir -p bench/last
cp "$work/results.tsv" "$work/tls.tsv" "$work/gobench.txt" bench/last/
echo "wrote docs/benchmarks.md (raw results in bench/last/)"
