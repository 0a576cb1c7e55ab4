package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"canaryd/rollout"
)

// startInflux runs Debian's InfluxDB 1.x on loopback ports of its own
// (HTTP and RPC), with reporting off, and creates database shop; it
// returns the HTTP base URL.
func startInflux(t *testing.T) string {
	t.Helper()
	bin := tool(t, "influxd", "CANARYD_REQUIRE_INFLUXDB")
	dir := t.TempDir()
	httpAddr, rpcAddr := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(dir, "influxdb.conf")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`reporting-disabled = true
bind-address = %q
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
[http]
  bind-address = %q
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
`, rpcAddr, filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), httpAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	base := "http://" + httpAddr
	daemon(t, "influxd", exec.Command(bin, "-config", cfg), syscall.SIGTERM, 10*time.Second, base+"/ping", http.StatusNoContent)
	resp, err := http.PostForm(base+"/query", url.Values{"q": {"CREATE DATABASE shop"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return base
}

// shopBackend is an instance of a shop whose checkouts fail at failRate
// while every answer is a 200 (what only the business metric shows). It
// writes its own counts to InfluxDB in line protocol, as a service's
// metrics library would, every 200ms.
func shopBackend(t *testing.T, influx, pool string, failRate float64) string {
	t.Helper()
	var mu sync.Mutex
	var requests, failed int
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		if rand.Float64() < failRate {
			failed++
		}
		mu.Unlock()
		w.Header().Set("X-Demo-Pool", pool)
		io.WriteString(w, "ok\n")
	})}
	go srv.Serve(ln)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			mu.Lock()
			n, f := requests, failed
			requests, failed = 0, 0
			mu.Unlock()
			if n == 0 {
				continue
			}
			line := fmt.Sprintf("checkout,pool=%s requests=%di,failed=%di %d\n", pool, n, f, time.Now().UnixNano())
			if resp, err := http.Post(influx+"/write?db=shop", "text/plain", strings.NewReader(line)); err == nil {
				resp.Body.Close()
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done; srv.Close() })
	return ln.Addr().String()
}

// analysis.http against real metric sources: a real InfluxDB fed by the
// shops' own checkout counts (a canary whose checkouts fail behind 200s is
// rolled back; a healthy one promoted), and a real Prometheus's JSON API
// scraping canaryd.
func TestHTTPChecksAgainstInfluxDBAndPrometheus(t *testing.T) {
	long(t)
	influx := startInflux(t)
	adminAddr := freeAddr(t)
	prom := startPrometheus(t, adminAddr)
	check := func(route string) string {
		return fmt.Sprintf(`{ name: checkout_failures, max: 0.05,
           url: "%s/query?db=shop&q=SELECT sum(\"failed\") / sum(\"requests\") FROM checkout WHERE pool = '{{canary}}' AND time >= '{{start}}' AND time <= '{{end}}'",
           json_path: "$.results[0].series[0].values[0][1]" },
         { name: canary_served, min: 1,
           url: "%s/api/v1/query?query=sum(canaryd_requests_total{route=\"%s\",pool=\"{{canary}}\"})",
           json_path: "$.data.result[0].value[1]" }`, influx, prom, route)
	}
	route := func(name, stable, canary, checks string) string {
		return fmt.Sprintf(`  - name: %s
    match: { path_prefix: /%s }
    rollout: { stable: %s, canary: %s, steps: [50, 100], interval: 1500ms, min_requests: 50, failure_limit: 1,
               analysis: { http: [ %s ] } }
    pools:
      - { name: %s, weight: 100, instances: [%q] }
      - { name: %s, weight: 0, instances: [%q] }
`, name, name, stable, canary, checks, stable, shopBackend(t, influx, stable, 0.01), canary, shopBackend(t, influx, canary, map[bool]float64{true: 0.3, false: 0.01}[name == "bad"]))
	}
	c := runCanaryd(t, t.TempDir(), adminAddr, route("good", "blue", "green", check("good"))+route("bad", "amber", "red", check("bad")))
	g1 := startLoad(c.proxy+"/good", 2, nil)
	defer g1.halt()
	g2 := startLoad(c.proxy+"/bad", 2, nil)
	defer g2.halt()

	if out, code := waitOutcome(t, c.admin, "bad"); code != 1 {
		t.Errorf("bad: exit %d; want 1 (rolled back):\n%s", code, out)
	}
	bad := c.status(t, "bad")
	if !strings.Contains(bad.Reason, "http:checkout_failures") || !strings.Contains(bad.Reason, "max 0.05") {
		t.Errorf("bad rolled back for: %s", bad.Reason)
	}
	if out, code := waitOutcome(t, c.admin, "good"); code != 0 {
		t.Fatalf("good: exit %d; want 0 (promoted):\n%s", code, out)
	}
	// The promoting analysis judged both sources' numbers.
	good := c.status(t, "good")
	var judged []string
	for _, e := range good.History {
		if e.To == rollout.Promoted {
			for _, v := range e.Verdicts {
				judged = append(judged, v.Check+" "+string(v.Result)+": "+v.Reason)
			}
		}
	}
	all := strings.Join(judged, "\n")
	if !strings.Contains(all, "http:checkout_failures pass") || !strings.Contains(all, "http:canary_served pass") {
		t.Errorf("the promotion's verdicts:\n%s", all)
	}
}
