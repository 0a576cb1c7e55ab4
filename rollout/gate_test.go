package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

func gateOf(url string, retries int, timeout time.Duration) *config.Gate {
	g := &config.Gate{Name: "g", At: config.GateStep, URL: url, Retries: &retries, Timeout: config.Duration(timeout)}
	g.Kind, g.Method = config.GateHTTP, "POST"
	return g
}

// Every kind of receiver gives its documented verdict, each from a real
// HTTP server (or a dead port).
func TestGateAnswers(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 10<<20)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + dead.Addr().String()
	dead.Close()
	var busy atomic.Int32
	for _, tc := range []struct {
		name     string
		h        http.HandlerFunc
		url      string // instead of a server
		retries  int
		want     Result
		inReason string
		maxTook  time.Duration
	}{
		{name: "204", h: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }, want: Pass},
		{name: "200 verdict pass", h: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"verdict":"pass","reason":"smoke ok"}`)
		}, want: Pass, inReason: "smoke ok"},
		{name: "200 verdict fail", h: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"verdict":"fail","reason":"checkout broken"}`)
		}, want: Fail, inReason: "checkout broken"},
		{name: "200 verdict inconclusive", h: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"verdict":"inconclusive"}`) }, want: Inconclusive},
		{name: "200 unknown verdict", h: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"verdict":"maybe"}`) }, want: Inconclusive, inReason: `"maybe"`},
		{name: "200 garbage body", h: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>ok</html>") }, want: Pass},
		{name: "500 garbage body", h: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			io.WriteString(w, "Traceback: KeyError 'sku'")
		}, want: Fail, inReason: "KeyError"},
		{name: "404", h: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, want: Fail, inReason: "status 404"},
		{name: "10 MB 200", h: func(w http.ResponseWriter, r *http.Request) { w.Write(big) }, want: Pass, inReason: "not read as a verdict", maxTook: 5 * time.Second},
		{name: "10 MB 500", h: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			w.Write(big)
		}, want: Fail, maxTook: 5 * time.Second},
		{name: "redirect loop", h: func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/again", http.StatusFound) }, want: Fail, inReason: `"/again"`},
		{name: "slow", h: func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body) // then the server sees the client leave
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}, want: Inconclusive, inReason: "no answer within timeout", maxTook: 5 * time.Second},
		{name: "dead", url: deadURL, retries: 1, want: Inconclusive, inReason: "attempt 2 of 2"},
		{name: "503 always", h: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }, retries: 1, want: Inconclusive, inReason: "busy"},
		{name: "429 then pass", h: func(w http.ResponseWriter, r *http.Request) {
			if busy.Add(1) == 1 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(429)
				return
			}
			w.WriteHeader(200)
		}, retries: 2, want: Pass, inReason: "attempt 2 of 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.url
			if tc.h != nil {
				srv := httptest.NewServer(tc.h)
				defer srv.Close()
				url = srv.URL
			}
			start := time.Now()
			v := newGateClient().call(context.Background(), gateOf(url, tc.retries, 300*time.Millisecond), []byte(`{}`))
			if v.Result != tc.want || !strings.Contains(v.Reason, tc.inReason) {
				t.Errorf("%s (%s); want %s with %q", v.Result, v.Reason, tc.want, tc.inReason)
			}
			if tc.maxTook > 0 && time.Since(start) > tc.maxTook {
				t.Errorf("took %v", time.Since(start))
			}
			if v.Check != "gate:g" {
				t.Errorf("check %q", v.Check)
			}
		})
	}
}

// A gate's request carries the configured headers and the body's HMAC.
func TestGateRequestSigned(t *testing.T) {
	var got http.Header
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		body, _ = io.ReadAll(r.Body)
	}))
	defer srv.Close()
	dir := t.TempDir()
	cfg, err := config.Parse("g.yaml", []byte(`routes:
  - name: web
    rollout:
      stable: blue
      canary: green
      gates:
        - { name: smoke, at: step, url: "`+srv.URL+`", secret_file: `+writeFile(t, dir, "key", "k3y\n")+`,
            headers: { X-Team: payments, Authorization: { file: `+writeFile(t, dir, "tok", "Bearer s3cret\n")+` } } }
    pools:
      - { name: blue, weight: 100, instances: ["127.0.0.1:1"] }
      - { name: green, weight: 0, instances: ["127.0.0.1:2"] }
`))
	if err != nil {
		t.Fatal(err)
	}
	g := &cfg.Routes[0].Rollout.Gates[0]
	req := gateRequest{Route: "web", Gate: "smoke", At: "step", Step: 2, CanaryWeight: 5, NextWeight: 25}
	if v := newGateClient().call(context.Background(), g, gateBody(g, req)); v.Result != Pass {
		t.Fatalf("%+v", v)
	}
	if got.Get("X-Canary-Signature") != Sign("k3y", body) || !strings.HasPrefix(got.Get("X-Canary-Signature"), "sha256=") {
		t.Errorf("signature %q, want %q", got.Get("X-Canary-Signature"), Sign("k3y", body))
	}
	if got.Get("Authorization") != "Bearer s3cret" || got.Get("X-Team") != "payments" {
		t.Errorf("headers %v", got)
	}
	var sent gateRequest
	if err := json.Unmarshal(body, &sent); err != nil || sent.NextWeight != 25 || sent.Route != "web" || sent.At != "step" {
		t.Errorf("body %s (%v)", body, err)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for h, want := range map[string]time.Duration{
		"": 0, "3": 3 * time.Second, "junk": 0, "-1": 0,
		now.Add(7 * time.Second).Format(http.TimeFormat): 7 * time.Second,
	} {
		if got := retryAfter(h, now); got != want {
			t.Errorf("%q: %v, want %v", h, got, want)
		}
	}
}

// gateServer answers with the status its set holds, and records the
// points it was asked at.
type gateServer struct {
	*httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	asked  []gateRequest
}

func newGateServer(t *testing.T, status int) *gateServer {
	g := &gateServer{}
	g.status.Store(int32(status))
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req gateRequest
		json.NewDecoder(r.Body).Decode(&req)
		g.mu.Lock()
		g.asked = append(g.asked, req)
		g.mu.Unlock()
		w.WriteHeader(int(g.status.Load()))
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *gateServer) points() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, r := range g.asked {
		out = append(out, r.Gate+"@"+r.At)
	}
	return out
}

func waitStatus(t *testing.T, m *Manager, route string, what string, ok func(Status) bool) Status {
	t.Helper()
	var st Status
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		st, _ = m.Status(route)
		if ok(st) {
			return st
		}
	}
	t.Fatalf("%s: never; status %s at %v%%: %s", what, st.Phase, st.CanaryWeight, st.Reason)
	return st
}

// The gates hold a release at each point: no traffic before pre_traffic
// passes, no next weight before the step gates pass; a failing gate counts
// toward failure_limit; a rollback tells its advisory gates.
func TestGatesDriveTheRollout(t *testing.T) {
	pre := newGateServer(t, 503)
	step := newGateServer(t, 200)
	promo := newGateServer(t, 500)
	after := newGateServer(t, 200)
	reg := prometheus.NewRegistry()
	traffic := newSim()
	m := NewManager(Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(reg), StateDir: t.TempDir()})
	routes := webRoutes(t, `{ stable: blue, canary: green, steps: [10, 50, 100], min_requests: 10, interval: 100ms, failure_limit: 1, max_inconclusive: 1000,
      gates: [
        { name: smoke, at: pre_traffic, url: "`+pre.URL+`", retries: 0 },
        { name: load, at: step, url: "`+step.URL+`" },
        { name: dry, at: step, url: "`+promo.URL+`", dry_run: true },
        { name: sign-off, at: pre_promotion, url: "`+promo.URL+`" },
        { name: page, at: rollback, url: "`+after.URL+`" } ] }`)
	m.Start()
	defer m.Close()
	m.Sync(routes)
	// 503s: no traffic, not even a segment's, while the gate is asked again.
	st := waitStatus(t, m, "web", "the smoke gate asked twice", func(Status) bool { return len(pre.points()) >= 2 })
	if o := overridesOf(m)["web"]; st.Gate == nil || st.Gate.At != "pre_traffic" || o.CanaryBP != 0 || o.CanaryLive || o.Shadowing {
		t.Fatalf("waiting on pre_traffic: gate %+v, override %+v", st.Gate, o)
	}
	traffic.add("green", 100, 0)
	traffic.add("blue", 900, 0)
	pre.status.Store(204)
	waitStatus(t, m, "web", "step 1 after the smoke gate passed", func(s Status) bool { return s.CanaryWeight == 10 && s.Gate == nil })
	// The step's analysis passes, the load gate passes (the dry run's 500
	// decides nothing), and the canary goes to 50%.
	traffic.add("green", 100, 0)
	traffic.add("blue", 900, 0)
	waitStatus(t, m, "web", "50% after the step gates", func(s Status) bool { return s.CanaryWeight == 50 })
	// Before 100%: the step gates, then the pre_promotion gate, whose 500
	// is the one failure failure_limit allows.
	traffic.add("green", 100, 0)
	traffic.add("blue", 900, 0)
	st = waitStatus(t, m, "web", "rolled back by the pre_promotion gate", func(s Status) bool { return s.Phase == RolledBack })
	if !strings.Contains(st.Reason, "gate:sign-off") || !strings.Contains(st.Reason, "status 500") {
		t.Errorf("rollback reason: %s", st.Reason)
	}
	waitStatus(t, m, "web", "the rollback gate's answer recorded", func(s Status) bool {
		return s.History[len(s.History)-1].Kind == KindGate && strings.Contains(s.History[len(s.History)-1].Reason, "gate:page pass")
	})
	want := []string{"load@step", "dry@step", "load@step", "dry@step", "sign-off@pre_promotion", "page@rollback"}
	got := append(step.points(), promo.points()...)
	got = append(got, after.points()...)
	if strings.Join(slices.Sorted(slices.Values(got)), ",") != strings.Join(slices.Sorted(slices.Values(want)), ",") {
		t.Errorf("gates asked: %v; want %v", got, want)
	}
	if n := counterValue(t, reg, "canaryd_rollout_gate_total", map[string]string{"gate": "sign-off", "verdict": "fail"}); n != 1 {
		t.Errorf("canaryd_rollout_gate_total{gate=sign-off,verdict=fail} = %v", n)
	}
}

// A gate that hangs for its whole timeout holds its own route only: the
// other route's rollout goes on, and the hung route's tripwire still fires.
func TestStuckGateHoldsOnlyItsRoute(t *testing.T) {
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then the server sees the client leave
		<-r.Context().Done()
	}))
	defer stuck.Close()
	traffic := newSim()
	m := NewManager(Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
	cfg, err := config.Parse("two.yaml", []byte(`routes:
  - name: a
    rollout: { stable: blue, canary: green, steps: [10, 100], min_requests: 10, interval: 100ms,
               tripwire: { window: 1s, min_requests: 10 },
               gates: [ { name: hang, at: step, url: "`+stuck.URL+`", timeout: 1m, retries: 0 } ] }
    pools:
      - { name: blue, weight: 100, instances: ["127.0.0.1:1"] }
      - { name: green, weight: 0, instances: ["127.0.0.1:2"] }
  - name: b
    match: { path_prefix: /b }
    rollout: { stable: blue2, canary: green2, steps: [10, 100], min_requests: 10, interval: 100ms }
    pools:
      - { name: blue2, weight: 100, instances: ["127.0.0.1:3"] }
      - { name: green2, weight: 0, instances: ["127.0.0.1:4"] }
`))
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Close()
	m.Sync(cfg.Routes)
	traffic.add("green", 100, 0)
	traffic.add("blue", 900, 0)
	waitStatus(t, m, "a", "route a waiting on its hung gate", func(s Status) bool { return s.Gate != nil })
	traffic.add("green2", 100, 0)
	traffic.add("blue2", 900, 0)
	waitStatus(t, m, "b", "route b promoted", func(s Status) bool { return s.Phase == Promoted })
	// A burst of canary errors on a: the tripwire does not wait for the gate.
	traffic.add("green", 100, 100)
	st := waitStatus(t, m, "a", "route a tripped", func(s Status) bool { return s.Phase == RolledBack })
	if st.Gate != nil {
		t.Errorf("still waiting on a gate after the rollback: %+v", st.Gate)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := dir + "/" + name
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A reload that removes the gates a rollout waits on moves it on: the
// approvals still configured are waited for; with none, the point passes.
func TestRemovedGatesReleaseTheWait(t *testing.T) {
	g := newGateServer(t, 503)
	m := NewManager(Deps{Counters: newSim(), Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
	m.Start()
	defer m.Close()
	m.Sync(webRoutes(t, `{ stable: blue, canary: green, steps: [10, 100], interval: 100ms, max_inconclusive: 1000,
      gates: [ { name: smoke, at: pre_traffic, url: "`+g.URL+`", retries: 0 } ] }`))
	waitStatus(t, m, "web", "waiting on the smoke gate", func(s Status) bool { return s.Gate != nil && len(g.points()) > 0 })
	m.Sync(webRoutes(t, `{ stable: blue, canary: green, steps: [10, 100], interval: 100ms }`))
	st := waitStatus(t, m, "web", "the wait released", func(s Status) bool { return s.Gate == nil && s.CanaryWeight == 10 })
	if !strings.Contains(st.Reason, "the pre_traffic gates the rollout waited on are gone from the config") {
		t.Errorf("%s", st.Reason)
	}
}
