package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"canaryd/admin"
	"canaryd/config"
	"canaryd/evidence"
	"canaryd/metrics"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const secret = "tok-3f9a1c-never-logged"

// adminRig is a served canaryd with a token and two routes: "web" with a
// rollout, "api" without.
type adminRig struct {
	srv   *Server
	admin string
	logs  *observer.ObservedLogs
	path  string
}

func startAdminRig(t *testing.T) *adminRig {
	t.Helper()
	a, b := pathBackend(t), pathBackend(t)
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	writeFile(t, token, secret+"\n")
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0", token_file: %q, allowed_hosts: [canaryd.internal] }
state_dir: %q
reload: { debounce: 5s, poll_interval: 1h } # reloads come from the tests alone: a poll between a write and the test's reload would make it "unchanged"
routes:
  - name: web
    rollout: { stable: blue, canary: green, steps: [10, 100], interval: 1h }
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
  - name: api
    match: { path_prefix: /api }
    pools:
      - { name: v1, weight: 100, instances: [%q] }
      - { name: v2, weight: 0, instances: [%q] }
`, token, filepath.Join(dir, "state"), a.URL, b.URL, a.URL, b.URL))
	data, _ := os.ReadFile(path)
	cfg, err := config.Parse(path, data)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	srv, err := New(cfg, Options{ConfigPath: path, ConfigData: data, Logger: zap.New(core), Registry: metrics.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	serveFor(t, srv)
	return &adminRig{srv: srv, admin: "http://" + srv.AdminAddr().String(), logs: logs, path: path}
}

func (a *adminRig) call(t *testing.T, method, path, host, token, ctype, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, a.admin+path, rd)
	if host != "" {
		req.Host = host
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminSecurity(t *testing.T) {
	a := startAdminRig(t)
	const json = "application/json"
	for _, tc := range []struct {
		name, method, path, host, token, ctype, body string
		want                                         int
	}{
		{"no token", "POST", "/api/v1/routes/web/pause", "", "", "", "", 401},
		{"wrong token", "POST", "/api/v1/routes/web/pause", "", "nope", "", "", 401},
		{"token of another length", "POST", "/api/v1/routes/web/pause", "", secret + "x", "", "", 401},
		{"GET on a mutation", "GET", "/api/v1/routes/web/pause", "", secret, "", "", 405},
		{"GET on weights", "GET", "/api/v1/routes/api/weights", "", secret, "", "", 405},
		{"text/plain body", "PUT", "/api/v1/routes/api/weights", "", secret, "text/plain", `{"v1":50,"v2":50}`, 415},
		{"form body", "POST", "/api/v1/routes/web/pause", "", secret, "application/x-www-form-urlencoded", "a=b", 415},
		{"foreign Host", "GET", "/api/v1/routes", "evil.example:9901", "", "", "", 403},
		{"foreign Host on a mutation", "POST", "/api/v1/routes/web/pause", "evil.example", secret, "", "", 403},
		{"foreign Host on the dashboard", "GET", "/", "rebind.attacker.test", "", "", "", 403},
		{"allowed host name", "GET", "/api/v1/routes", "canaryd.internal:9901", "", "", "", 200},
		{"localhost", "GET", "/api/v1/routes", "localhost:9901", "", "", "", 200},
		{"IPv6 literal", "GET", "/api/v1/routes", "[::1]:9901", "", "", "", 200},
		{"metrics answer any Host (scrapers)", "GET", "/metrics", "canaryd:9901", "", "", "", 200},
		{"valid pause", "POST", "/api/v1/routes/web/pause", "", secret, "", "", 200},
		{"invalid transition", "POST", "/api/v1/routes/web/pause", "", secret, "", "", 409},
		{"unknown route", "POST", "/api/v1/routes/nope/pause", "", secret, "", "", 404},
		{"route without rollout", "POST", "/api/v1/routes/api/pause", "", secret, "", "", 404},
		{"valid weights", "PUT", "/api/v1/routes/api/weights", "", secret, json, `{"v1": 70, "v2": 30}`, 200},
		{"weights not summing to 100", "PUT", "/api/v1/routes/api/weights", "", secret, json, `{"v1": 70, "v2": 20}`, 400},
		{"weights missing a pool", "PUT", "/api/v1/routes/api/weights", "", secret, json, `{"v1": 100}`, 400},
		{"weights with an unknown pool", "PUT", "/api/v1/routes/api/weights", "", secret, json, `{"v1": 50, "v2": 50, "v3": 0}`, 400},
		{"weights with three decimals", "PUT", "/api/v1/routes/api/weights", "", secret, json, `{"v1": 50.005, "v2": 49.995}`, 400},
		{"weights not JSON", "PUT", "/api/v1/routes/api/weights", "", secret, json, `v1=50`, 400},
		{"weights of a rollout route", "PUT", "/api/v1/routes/web/weights", "", secret, json, `{"blue": 50, "green": 50}`, 409},
		{"dashboard", "GET", "/", "127.0.0.1", "", "", "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := a.call(t, tc.method, tc.path, tc.host, tc.token, tc.ctype, tc.body)
			if code != tc.want {
				t.Errorf("%s %s: %d, want %d (%s)", tc.method, tc.path, code, tc.want, body)
			}
			if code >= 400 && code != 405 && !strings.Contains(body, `"error"`) {
				t.Errorf("error answer is not JSON with a message: %s", body)
			}
		})
	}
	// The token shows up in no log line and not in /metrics.
	_, m := a.call(t, "GET", "/metrics", "", "", "", "")
	if strings.Contains(m, secret) {
		t.Error("the token appears in /metrics")
	}
	for _, e := range a.logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, secret) {
			t.Errorf("the token appears in a log line: %s", line)
		}
	}
	if got := a.srv.router.Load().Route("api").Pools[0].Weight; got != 7000 {
		t.Errorf("api v1 weight %d bp after PUT 70", got)
	}
}

// 50 concurrent weight changes and pause/resume calls: no 5xx, and the
// weights in force are those of the change applied last (highest version).
func TestConcurrentAdminMutations(t *testing.T) {
	a := startAdminRig(t)
	type result struct {
		code    int
		version int
		v1      float64
	}
	results := make(chan result, 100)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(2)
		go func(i int) {
			defer wg.Done()
			v1 := float64(i)
			body, _ := json.Marshal(map[string]float64{"v1": v1, "v2": 100 - v1})
			code, resp := a.call(t, "PUT", "/api/v1/routes/api/weights", "", secret, "application/json", string(body))
			var r admin.WeightsResult
			json.Unmarshal([]byte(resp), &r)
			results <- result{code, r.Version, v1}
		}(i)
		go func(i int) {
			defer wg.Done()
			action := "pause"
			if i%2 == 1 {
				action = "resume"
			}
			code, _ := a.call(t, "POST", "/api/v1/routes/web/"+action, "", secret, "", "")
			results <- result{code: code}
		}(i)
	}
	wg.Wait()
	close(results)
	last := result{}
	for r := range results {
		if r.code >= 500 {
			t.Errorf("a concurrent call got %d", r.code)
		}
		if r.version > last.version {
			last = r
		}
	}
	if last.version != 50 {
		t.Errorf("highest version %d after 50 changes", last.version)
	}
	var rv admin.RouteView
	_, body := a.call(t, "GET", "/api/v1/routes/api", "", "", "", "")
	json.Unmarshal([]byte(body), &rv)
	if rv.WeightsVersion != 50 || rv.Pools[0].Weight != last.v1 || a.srv.router.Load().Route("api").Pools[0].Weight != int(last.v1*100) {
		t.Errorf("in force: version %d, v1 %.0f%%; the last change was version %d with v1 %.0f%%", rv.WeightsVersion, rv.Pools[0].Weight, last.version, last.v1)
	}
	if st, err := a.srv.rollouts.Status("web"); err != nil || (st.Phase != "paused" && st.Phase != "progressing") {
		t.Errorf("rollout after concurrent pause/resume: %+v %v", st.Phase, err)
	}
}

// Weights set by hand survive reloads that leave the route's weights in the
// file alone, and give way to an edit of them.
func TestManualWeightsAndReload(t *testing.T) {
	a := startAdminRig(t)
	if code, body := a.call(t, "PUT", "/api/v1/routes/api/weights", "", secret, "application/json", `{"v1": 40, "v2": 60}`); code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	weight := func() int { return a.srv.router.Load().Route("api").Pools[0].Weight }
	data, _ := os.ReadFile(a.path)
	// An unrelated edit (a comment) keeps the manual weights.
	writeFile(t, a.path, string(data)+"# unrelated\n")
	if res := a.srv.Reload(context.Background(), "test"); res.Result != metrics.ReloadApplied || weight() != 4000 {
		t.Errorf("after an unrelated edit: %s, v1 %d bp", res.Result, weight())
	}
	// Editing the route's weights in the file replaces them.
	writeFile(t, a.path, strings.Replace(strings.Replace(string(data), "{ name: v1, weight: 100", "{ name: v1, weight: 90", 1), "{ name: v2, weight: 0", "{ name: v2, weight: 10", 1))
	if res := a.srv.Reload(context.Background(), "test"); res.Result != metrics.ReloadApplied || weight() != 9000 {
		t.Errorf("after editing the weights: %s %v, v1 %d bp", res.Result, res.Err, weight())
	}
	if e := a.logs.FilterMessage("weights set by hand replaced by the config file").All(); len(e) != 1 {
		t.Errorf("log of the replacement: %d lines", len(e))
	}
}

// An admin listener reachable beyond loopback without a token is shouted
// about at start.
func TestNonLoopbackAdminWithoutTokenWarns(t *testing.T) {
	for _, tc := range []struct {
		listen string
		warn   bool
	}{{"0.0.0.0:0", true}, {"127.0.0.1:0", false}} {
		cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: %q }
routes: [{ name: web, pools: [{ name: blue, weight: 100, instances: ["127.0.0.1:1"] }] }]
`, tc.listen)))
		if err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zapcore.WarnLevel)
		srv, err := New(cfg, Options{Logger: zap.New(core)})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Listen(); err != nil {
			t.Fatal(err)
		}
		srv.proxyLn.Close()
		srv.adminLn.Close()
		warned := false
		for _, e := range logs.All() {
			warned = warned || strings.Contains(e.Message, "HAS NO TOKEN")
		}
		if warned != tc.warn {
			t.Errorf("admin on %s: warned %v, want %v", tc.listen, warned, tc.warn)
		}
	}
}

// A pool's rate is over the time its stats cover, never over a minute the
// process has not lived, and at least a second.
func TestRateOf(t *testing.T) {
	t0 := time.Now()
	for _, tc := range []struct {
		span     time.Duration
		requests uint64
		secs     float64
		rate     float64
	}{
		{16 * time.Second, 3040, 16, 190}, // 16 s old: 190/s, not 3040/60 = 50.7
		{time.Minute, 600, 60, 10},
		{200 * time.Millisecond, 5, 0.2, 5}, // at least a second
		{0, 0, 0, 0},
	} {
		secs, rate := rateOf(evidence.Counts{From: t0, To: t0.Add(tc.span), Requests: tc.requests})
		if secs != tc.secs || rate != tc.rate {
			t.Errorf("%v, %d requests: %v s, %v/s; want %v s, %v/s", tc.span, tc.requests, secs, rate, tc.secs, tc.rate)
		}
	}
}
