package app

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/metrics"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// pathBackend answers /ok with 200, /err with 500, and holds /slow until
// the request is cancelled.
func pathBackend(t *testing.T) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/err":
			w.WriteHeader(http.StatusInternalServerError)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func scrape(t *testing.T, adminURL string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// series renders a family as "label=value,... value" lines for comparison.
func series(mf *dto.MetricFamily, keys ...string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range mf.GetMetric() {
		l := labelsOf(m)
		var parts []string
		for _, k := range keys {
			parts = append(parts, l[k])
		}
		v := m.GetCounter().GetValue()
		if m.Gauge != nil {
			v = m.GetGauge().GetValue()
		}
		if m.Histogram != nil {
			v = float64(m.GetHistogram().GetSampleCount())
		}
		out[strings.Join(parts, "/")] = v
	}
	return out
}

// A known mix of 200, 500, 502 and cancelled requests through the proxy
// shows up exactly in /metrics, and the in-process window agrees.
func TestMetricsCountExactly(t *testing.T) {
	a, b := pathBackend(t), pathBackend(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
routes:
  - name: web
    force: { header: X-Canary-Pool }
    pools:
      - { name: blue, weight: 50, instances: [%q] }
      - { name: green, weight: 50, instances: [%q] }
  - name: api
    match: { path_prefix: /api }
    health: { passive: { consecutive_failures: 0 } }
    pools:
      - { name: dead, weight: 100, instances: [%q] }
`, a.URL, b.URL, "127.0.0.1:1"))
	r := startRig(t, path)
	send := func(n int, pool, p string, timeout time.Duration) {
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.proxy+p, nil)
			if pool != "" {
				req.Header.Set("X-Canary-Pool", pool)
			}
			if resp, err := r.client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			cancel()
		}
	}
	send(30, "blue", "/ok", 5*time.Second)
	send(20, "green", "/ok", 5*time.Second)
	send(7, "blue", "/err", 5*time.Second)
	send(4, "green", "/err", 5*time.Second)
	send(5, "green", "/slow", 100*time.Millisecond) // the client gives up
	send(6, "", "/api/x", 5*time.Second)            // connection refused
	want := map[string]float64{
		"web/blue/200": 30, "web/green/200": 20, "web/blue/500": 7, "web/green/500": 4,
		"web/green/499": 5, "api/dead/502": 6,
	}
	var got map[string]float64
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got = series(scrape(t, r.admin)["canaryd_requests_total"], "route", "pool", "code")
		if fmt.Sprint(got) == fmt.Sprint(want) || time.Now().After(end) {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("canaryd_requests_total:\n got %v\nwant %v", got, want)
	}
	mfs := scrape(t, r.admin)
	if h := series(mfs["canaryd_request_duration_seconds"], "route", "pool"); h["web/blue"] != 37 || h["web/green"] != 29 || h["api/dead"] != 6 {
		t.Errorf("duration histogram counts: %v", h)
	}
	if w := series(mfs["canaryd_pool_weight"], "route", "pool"); w["web/blue"] != 50 || w["web/green"] != 50 || w["api/dead"] != 100 {
		t.Errorf("canaryd_pool_weight: %v", w)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "canaryd_config_last_reload_successful", "canaryd_instance_healthy"} {
		if mfs[name] == nil {
			t.Errorf("%s missing from /metrics", name)
		}
	}
	// The in-process windows agree (cancelled requests are kept apart).
	for _, c := range []struct {
		route, pool                 string
		requests, errors, cancelled uint64
	}{
		{"web", "blue", 37, 7, 0}, {"web", "green", 24, 4, 5}, {"api", "dead", 6, 6, 0},
	} {
		n := r.srv.requests.Pool(c.route, c.pool).Now()
		if n.Requests != c.requests || n.Errors != c.errors || n.Cancelled != c.cancelled {
			t.Errorf("%s/%s window: %d requests, %d errors, %d cancelled; want %d, %d, %d",
				c.route, c.pool, n.Requests, n.Errors, n.Cancelled, c.requests, c.errors, c.cancelled)
		}
	}
}

// A backend with a known latency mix (90% 5 ms, 10% 50 ms): the window's
// p50 and p99 lie between the backend's own delay at that quantile and
// what the client measured (which adds the client's and the loopback's
// time), each with the histogram's 5% bucket error and some slack.
func TestWindowQuantilesThroughProxy(t *testing.T) {
	var n int64
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := 5 * time.Millisecond
		if n++; n%10 == 0 {
			d = 50 * time.Millisecond
		}
		time.Sleep(d)
	}))
	defer be.Close()
	path := oneRouteConfig(t, "", "", be.URL)
	r := startRig(t, path)
	var truth []time.Duration
	for i := 0; i < 300; i++ {
		start := time.Now()
		resp, err := r.client.Get(r.proxy + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		truth = append(truth, time.Since(start))
	}
	sort.Slice(truth, func(i, j int) bool { return truth[i] < truth[j] })
	var c = r.srv.requests.Pool("web", "blue").Now()
	for end := time.Now().Add(2 * time.Second); c.Requests < 300 && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		c = r.srv.requests.Pool("web", "blue").Now()
	}
	for _, c2 := range []struct {
		q     float64
		floor time.Duration // the backend's own delay at q
	}{{0.5, 5 * time.Millisecond}, {0.99, 50 * time.Millisecond}} {
		client := truth[int(math.Ceil(c2.q*float64(len(truth))))-1]
		got := c.Quantile(c2.q)
		lo, hi := time.Duration(float64(c2.floor)*0.95), time.Duration(float64(client)*1.10)
		if got < lo || got > hi {
			t.Errorf("p%.0f: window %v, want between %v (backend delay) and %v (client measured %v)", c2.q*100, got, lo, hi, client)
		} else {
			t.Logf("p%.0f: window %v, client measured %v", c2.q*100, got, client)
		}
	}
}

func TestAccessLog(t *testing.T) {
	be := pathBackend(t)
	run := func(accessLog string, reqs []string) []observer.LoggedEntry {
		core, logs := observer.New(zapcore.DebugLevel)
		cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "off" }
%s
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: [%q] }]
`, accessLog, be.URL)))
		if err != nil {
			t.Fatal(err)
		}
		srv, err := New(cfg, Options{Logger: zap.New(core)})
		if err != nil {
			t.Fatal(err)
		}
		stop := serveFor(t, srv)
		tr := &http.Transport{}
		for _, p := range reqs {
			req, _ := http.NewRequest(http.MethodGet, "http://"+srv.ProxyAddr().String()+p+"?q=1", nil)
			req.Header.Set("X-Request-Id", "rid-"+p)
			req.Header.Set("User-Agent", "probe/1.0")
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		tr.CloseIdleConnections()
		stop()
		return logs.FilterLoggerName("access").All()
	}
	if lines := run("", []string{"/ok", "/err"}); len(lines) != 0 {
		t.Errorf("access log off wrote %d lines", len(lines))
	}
	lines := run("access_log: { enabled: true }", []string{"/ok"})
	if len(lines) != 1 {
		t.Fatalf("%d lines for one request", len(lines))
	}
	f := lines[0].ContextMap()
	for k, want := range map[string]any{"route": "web", "pool": "blue", "instance": be.URL, "status": int64(200), "bytes": int64(0), "request_id": "rid-/ok", "method": "GET", "path": "/ok",
		"query": "q=1", "user_agent": "probe/1.0", "proto": "HTTP/1.1", "request_bytes": int64(0)} {
		if fmt.Sprint(f[k]) != fmt.Sprint(want) {
			t.Errorf("field %s = %v, want %v", k, f[k], want)
		}
	}
	if d, ok := f["duration"].(float64); !ok || d <= 0 || d > 5 {
		t.Errorf("duration %v: want a number of seconds", f["duration"])
	}
	if !strings.HasPrefix(fmt.Sprint(f["host"]), "127.0.0.1:") {
		t.Errorf("host %v", f["host"])
	}
	if lines[0].Caller.Defined {
		t.Errorf("access lines carry a caller (%v): it is always logAccess, which tells nothing", lines[0].Caller)
	}
	var reqs []string
	for i := 0; i < 100; i++ {
		reqs = append(reqs, "/ok")
	}
	reqs = append(reqs, "/err", "/err", "/err")
	if lines := run("access_log: { enabled: true, sample: 10 }", reqs); len(lines) != 13 {
		t.Errorf("sample 10: %d lines for 100 ok and 3 errors, want 10 + 3", len(lines))
	}
}

// canaryd_instance_healthy is read from the live table at each scrape: an
// instance a probe takes out reads 0, one that is back reads 1, and one a
// reload removes has no series any more.
func TestInstanceHealthySeries(t *testing.T) {
	blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
	deadLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + deadLn.Addr().String()
	deadLn.Close() // nothing listens: probes fail
	path := filepath.Join(t.TempDir(), "config.yaml")
	cfg := func(extra string) string {
		return fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
routes:
  - name: web
    health: { active: { path: /, interval: 100ms, timeout: 50ms, fall: 1, rise: 1 } }
    pools:
      - { name: blue, weight: 50, instances: [%q%s] }
      - { name: green, weight: 50, instances: [%q] }
`, blue.URL, extra, green.URL)
	}
	writeFile(t, path, cfg(fmt.Sprintf(", %q", dead)))
	r := startRig(t, path)
	healthy := func() map[string]float64 {
		return series(scrape(t, r.admin)["canaryd_instance_healthy"], "pool", "instance")
	}
	waitFor(t, 5*time.Second, func() bool { return healthy()["blue/"+dead] == 0 && len(healthy()) == 3 })
	if h := healthy(); h["blue/"+blue.URL] != 1 || h["green/"+green.URL] != 1 {
		t.Fatalf("healthy: %v", h)
	}
	writeFile(t, path, cfg(""))
	r.next(metrics.ReloadApplied, 5*time.Second)
	if h := healthy(); len(h) != 2 || h["blue/"+blue.URL] != 1 {
		t.Fatalf("after the dead instance's removal: %v", h)
	}
}
