// Command report turns bench/run.sh's raw results into docs/benchmarks.md:
// medians over the rounds, ratios to direct and to nginx, and the proxy
// process's CPU time per request.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

type run struct {
	rps, p50, p99 float64 // req/s, ms, ms
	cpuUsPerReq   float64
}

// main reads the benchmark's raw results and prints the report, top to
// bottom as the report reads (a tool's script; its length is its table).
func main() {
	results := flag.String("results", "", "results.tsv from bench/run.sh")
	clk := flag.Float64("ticks", 100, "clock ticks per second (getconf CLK_TCK)")
	backend := flag.String("backend", "", "what served as the backend")
	duration := flag.String("duration", "", "length of one run")
	rounds := flag.Int("rounds", 0, "rounds")
	canaryd := flag.String("canaryd", "", "canaryd version line")
	gobench := flag.String("gobench", "", "output of go test -bench, for the Go benchmarks table (optional)")
	notes := flag.String("notes", "", "markdown appended as is: the profile findings and the optimization log (optional)")
	tlsResults := flag.String("tls", "", "tls.tsv from bench/run.sh, for the TLS and HTTP/2 table (optional)")
	flag.Parse()

	f, err := os.Open(*results)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	runs := map[string]map[int][]run{}
	var targets []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		c := strings.Split(sc.Text(), "\t")
		if len(c) < 8 {
			continue
		}
		conns, _ := strconv.Atoi(c[1])
		reqs, _ := strconv.ParseFloat(c[6], 64)
		ticks, _ := strconv.ParseFloat(c[7], 64)
		r := run{rps: num(c[3]), p50: ms(c[4]), p99: ms(c[5])}
		if reqs > 0 {
			r.cpuUsPerReq = ticks / *clk * 1e6 / reqs
		}
		if runs[c[0]] == nil {
			runs[c[0]] = map[int][]run{}
			targets = append(targets, c[0])
		}
		runs[c[0]][conns] = append(runs[c[0]][conns], r)
	}

	var conns []int
	for c := range runs[targets[0]] {
		conns = append(conns, c)
	}
	sort.Ints(conns)

	fmt.Printf(`# Benchmarks

Measured by `+"`./bench/run.sh`"+` on %s. The runner is not part of CI; rerun it
to refresh this file (it is rewritten whole).

- canaryd: %s
- peers: %s; %s; %s
- machine: %s, %d cores. The load generator (wrk, 1 thread, keep-alive) is
  pinned to core 0; each proxy and the backend share core 1 (taskset), and Go's
  GOMAXPROCS follows the affinity. nginx and HAProxy run one worker.
- backend: %s, answering 128 bytes on two ports. Each proxy splits 90/10
  between them with upstream keep-alive.
- %d interleaved rounds of %s per target and connection count; the figures
  are medians. "CPU µs/req" is the proxy process's user plus system time per
  request, from /proc (for "direct", the backend's own).

`, time.Now().UTC().Format("2006-01-02"), *canaryd, version("nginx", "-v"), version("haproxy", "-v"), version("wrk", "-v"),
		cpuModel(), runtime.NumCPU(), *backend, *rounds, *duration)

	rpsOf := func(t string, c int) float64 { return median(runs[t][c], func(r run) float64 { return r.rps }) }
	p99Of := func(t string, c int) float64 { return median(runs[t][c], func(r run) float64 { return r.p99 }) }
	if c := 64; len(runs["canaryd"][c]) > 0 && len(runs["httputil"][c]) > 0 {
		fmt.Printf("**At %d connections: canaryd %s the plain httputil baseline's throughput (target ≥ 2.00×), %s nginx's (target ≥ 0.50×); p99 %.2f ms against the baseline's %.2f ms.**\n\n",
			c, ratio(rpsOf("canaryd", c), rpsOf("httputil", c)), ratio(rpsOf("canaryd", c), rpsOf("nginx", c)), p99Of("canaryd", c), p99Of("httputil", c))
		fmt.Printf("Those are ratios of medians. Taken round by round instead (each round runs the targets back to back, so a ratio within a round cancels the machine's drift between rounds): canaryd %s the baseline and %s nginx.\n\n",
			pairedRatio(runs["canaryd"][c], runs["httputil"][c]), pairedRatio(runs["canaryd"][c], runs["nginx"][c]))
		if len(runs["nethttp"][c]) > 0 {
			cpu := func(t string) float64 { return median(runs[t][c], func(r run) float64 { return r.cpuUsPerReq }) }
			fmt.Printf("**Against the net/http ceiling (a bare net/http server answering the same bytes itself, on the proxies' core): canaryd %s its throughput, round by round %s; nginx %s, HAProxy %s. Per request, canaryd spends %.1f µs of CPU against the bare server's %.1f µs, nginx's %.1f µs and HAProxy's %.1f µs.**\n\n",
				ratio(rpsOf("canaryd", c), rpsOf("nethttp", c)), pairedRatio(runs["canaryd"][c], runs["nethttp"][c]),
				ratio(rpsOf("nginx", c), rpsOf("nethttp", c)), ratio(rpsOf("haproxy", c), rpsOf("nethttp", c)),
				cpu("canaryd"), cpu("nethttp"), cpu("nginx"), cpu("haproxy"))
		}
	}
	for _, c := range conns {
		direct, nginx, base, ceiling := rpsOf("direct", c), rpsOf("nginx", c), rpsOf("httputil", c), rpsOf("nethttp", c)
		fmt.Printf("## %d connections\n\n", c)
		fmt.Println("| target | req/s | p50 ms | p99 ms | vs direct | vs net/http ceiling | vs httputil | vs nginx | CPU µs/req |")
		fmt.Println("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, t := range targets {
			rs := runs[t][c]
			rps := rpsOf(t, c)
			fmt.Printf("| %s | %.0f | %.2f | %.2f | %s | %s | %s | %s | %.1f |\n", t, rps,
				median(rs, func(r run) float64 { return r.p50 }), p99Of(t, c),
				ratio(rps, direct), ratio(rps, ceiling), ratio(rps, base), ratio(rps, nginx), median(rs, func(r run) float64 { return r.cpuUsPerReq }))
		}
		fmt.Println()
	}
	if *tlsResults != "" {
		if err := tlsTable(*tlsResults, *clk); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if *gobench != "" {
		if err := goBenchTable(*gobench); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if *notes != "" {
		data, err := os.ReadFile(*notes)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Stdout.Write(data)
	}
}

// tlsMode describes the front door's runs, in table order.
var tlsModes = []struct{ mode, what string }{
	{"tls-keepalive", "TLS keep-alive: wrk over https, 64 connections"},
	{"tls-handshake", "full TLS handshakes: wrk over https, 16 connections, `Connection: close` (a new connection and handshake per request)"},
	{"h2", "HTTP/2: h2load, 16 connections × 10 concurrent streams"},
}

// tlsTable prints the front door's runs (tls.tsv: target, mode, round,
// rps, p99 ms, requests, cpu ticks): medians, and the ratios the issue
// sets targets for.
func tlsTable(path string, clk float64) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	runs := map[string]map[string][]run{} // mode → target → rounds
	var targets []string
	seen := map[string]bool{}
	for i, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		c := strings.Split(l, "\t")
		if i == 0 || len(c) < 7 {
			continue
		}
		reqs, ticks := num(c[5]), num(c[6])
		r := run{rps: num(c[3]), p99: ms(c[4])}
		if reqs > 0 {
			r.cpuUsPerReq = ticks / clk * 1e6 / reqs
		}
		if runs[c[1]] == nil {
			runs[c[1]] = map[string][]run{}
		}
		runs[c[1]][c[0]] = append(runs[c[1]][c[0]], r)
		if !seen[c[0]] {
			seen[c[0]] = true
			targets = append(targets, c[0])
		}
	}
	rps := func(mode, t string) float64 { return median(runs[mode][t], func(r run) float64 { return r.rps }) }
	fmt.Print("## TLS and HTTP/2\n\n" +
		"Each target terminates TLS with the same ECDSA P-256 certificate in front of the same two upstreams: " +
		"canaryd with a `tls` block, the httputil baseline with `ListenAndServeTLS` (Go's server: HTTP/2 too), " +
		"and nginx with `listen ... ssl http2`. p99 is wrk's (h2load reports none).\n\n")
	fmt.Printf("**Over TLS keep-alive: canaryd %s the httputil baseline (target ≥ 2.00×) and %s nginx (target ≥ 0.50×); over HTTP/2 %s nginx (target ≥ 0.50×); full handshakes: canaryd %.0f/s, nginx %.0f/s, httputil %.0f/s.**\n\n",
		ratio(rps("tls-keepalive", "canaryd"), rps("tls-keepalive", "httputil")), ratio(rps("tls-keepalive", "canaryd"), rps("tls-keepalive", "nginx")),
		ratio(rps("h2", "canaryd"), rps("h2", "nginx")),
		rps("tls-handshake", "canaryd"), rps("tls-handshake", "nginx"), rps("tls-handshake", "httputil"))
	fmt.Printf("Round by round (the targets run back to back in each round, which cancels the machine's drift between rounds): over TLS keep-alive canaryd %s the baseline and %s nginx; over HTTP/2 %s nginx.\n\n",
		pairedRatio(runs["tls-keepalive"]["canaryd"], runs["tls-keepalive"]["httputil"]),
		pairedRatio(runs["tls-keepalive"]["canaryd"], runs["tls-keepalive"]["nginx"]),
		pairedRatio(runs["h2"]["canaryd"], runs["h2"]["nginx"]))
	for _, m := range tlsModes {
		if runs[m.mode] == nil {
			continue
		}
		fmt.Printf("### %s\n\n| target | req/s | p99 ms | vs httputil | vs nginx | CPU µs/req |\n| --- | ---: | ---: | ---: | ---: | ---: |\n", m.what)
		for _, t := range targets {
			rs := runs[m.mode][t]
			if len(rs) == 0 {
				continue
			}
			p99 := "–"
			if v := median(rs, func(r run) float64 { return r.p99 }); v > 0 {
				p99 = fmt.Sprintf("%.2f", v)
			}
			fmt.Printf("| %s | %.0f | %s | %s | %s | %.1f |\n", t, rps(m.mode, t), p99,
				ratio(rps(m.mode, t), rps(m.mode, "httputil")), ratio(rps(m.mode, t), rps(m.mode, "nginx")),
				median(rs, func(r run) float64 { return r.cpuUsPerReq }))
		}
		fmt.Println()
	}
	return nil
}

// goBenchTable prints go test -bench output as a table, one row per
// benchmark, with its package.
func goBenchTable(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	fmt.Print("## Go benchmarks\n\n" +
		"`go test -run '^$' -bench ... -benchtime=2s` on the same machine, not pinned. " +
		"BenchmarkProxyPath/handler and BenchmarkBaselinePath measure the same thing: " +
		"one proxied request, handler called in-process, upstream on a loopback socket.\n\n" +
		"| package | benchmark | ns/op | B/op | allocs/op |\n| --- | --- | ---: | ---: | ---: |\n")
	pkg := ""
	for _, l := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(l, "pkg: "); ok {
			pkg = p
			continue
		}
		f := strings.Fields(l)
		if len(f) < 8 || !strings.HasPrefix(f[0], "Benchmark") || f[3] != "ns/op" {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i] // the GOMAXPROCS suffix
		}
		fmt.Printf("| %s | %s | %s | %s | %s |\n", pkg, name, f[2], f[4], f[6])
	}
	fmt.Println()
	return nil
}

func num(s string) float64 {
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// ms reads wrk's latency ("812.00us", "1.23ms", "2.01s") in milliseconds.
func ms(s string) float64 {
	for _, u := range []struct {
		suffix string
		scale  float64
	}{{"us", 1e-3}, {"ms", 1}, {"s", 1e3}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			return num(v) * u.scale
		}
	}
	return num(s)
}

func median(rs []run, f func(run) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// pairedRatio is the median over rounds of a's throughput over b's in the
// same round, with the range: "2.05× (1.60–2.94× over 5 rounds)".
func pairedRatio(a, b []run) string {
	var rs []run
	for i := range min(len(a), len(b)) {
		if b[i].rps > 0 {
			rs = append(rs, run{rps: a[i].rps / b[i].rps})
		}
	}
	if len(rs) == 0 {
		return "–"
	}
	lo, hi := rs[0].rps, rs[0].rps
	for _, r := range rs {
		lo, hi = min(lo, r.rps), max(hi, r.rps)
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f× over %d rounds)", median(rs, func(r run) float64 { return r.rps }), lo, hi, len(rs))
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func version(cmd, flag string) string {
	out, _ := exec.Command(cmd, flag).CombinedOutput() // some exit 1 after printing it
	if len(out) == 0 {
		return cmd + " not installed"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}
