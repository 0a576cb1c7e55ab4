package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/metrics"
	"canaryd/rollout"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// affinityConfig is configText with canaryd's signed affinity cookie.
func affinityConfig(t *testing.T, green int, blue, greenURL string) string {
	key := filepath.Join(t.TempDir(), "affinity.key")
	if _, err := os.Stat(key); err != nil {
		writeFile(t, key, "0123456789abcdef0123456789abcdef\n")
	}
	return configText(green, blue, greenURL) + fmt.Sprintf("    sticky: { cookie: cd, set: true, ttl: 1h, secret_file: %q }\n", key)
}

// Ten thousand clients without a cookie each get one, and stay on their
// pool while the canary's weight rises 5 → 25 → 50 → 100: nobody moves
// back to stable. A rollback sends every one of them to stable.
func TestAffinityCookieKeepsUsersOnTheirPool(t *testing.T) {
	long(t)
	blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
	path := filepath.Join(t.TempDir(), "config.yaml")
	keyed := affinityConfig(t, 5, blue.URL, green.URL)
	writeFile(t, path, keyed)
	r := startRig(t, path)
	const clients = 10000
	cookies := make([]string, clients)
	onGreen := make([]bool, clients)
	// get sends one request for client i and returns the pool and the
	// Set-Cookie it was given ("" for none).
	get := func(i int, hdr map[string]string) (pool, set string) {
		req, _ := http.NewRequest(http.MethodGet, r.proxy+"/", nil)
		if cookies[i] != "" {
			req.Header.Set("Cookie", "theme=dark; "+cookies[i])
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := r.client.Do(req)
		if err != nil {
			t.Error(err)
			return "", ""
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Backend"), resp.Header.Get("Set-Cookie")
	}
	each := func(f func(i int)) {
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < clients; i += 8 {
					f(i)
				}
			})
		}
		wg.Wait()
	}
	var first atomic.Int64
	each(func(i int) {
		pool, set := get(i, nil)
		if !strings.HasPrefix(set, "cd=1.") || !strings.Contains(set, "HttpOnly") || !strings.Contains(set, "SameSite=Lax") || strings.Contains(set, "Secure") {
			t.Errorf("client %d: Set-Cookie %q", i, set)
			return
		}
		cookies[i] = strings.SplitN(set, ";", 2)[0]
		onGreen[i] = pool == "green"
		if onGreen[i] {
			first.Add(1)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	// Buckets are uniform: 5% of 10,000 is 500, and 3.5 standard
	// deviations are about 76.
	if n := first.Load(); n < 424 || n > 576 {
		t.Errorf("%d of %d new clients on the 5%% canary", n, clients)
	}
	// A forced request is a preview: it is given no cookie.
	if _, set := get(0, map[string]string{"X-Canary-Pool": "blue"}); set != "" {
		t.Errorf("a forced request was given a cookie: %q", set)
	}
	for _, w := range []int{5, 25, 50, 100, 0} {
		text := strings.Replace(keyed, fmt.Sprintf("weight: %d,", 95), fmt.Sprintf("weight: %d,", 100-w), 1)
		text = strings.Replace(text, "weight: 5,", fmt.Sprintf("weight: %d,", w), 1)
		if w != 5 {
			writeFile(t, path, text)
			r.next(metrics.ReloadApplied, 5*time.Second)
		}
		var n, back atomic.Int64
		each(func(i int) {
			pool, set := get(i, nil)
			if set != "" {
				t.Errorf("client %d with a valid cookie was given another: %q", i, set)
			}
			now := pool == "green"
			if onGreen[i] && !now && w != 0 {
				back.Add(1)
			}
			onGreen[i] = now
			if now {
				n.Add(1)
			}
		})
		t.Logf("canary at %d%%: %d of %d clients on it", w, n.Load(), clients)
		if back.Load() != 0 {
			t.Fatalf("canary at %d%%: %d clients moved back to stable", w, back.Load())
		}
		switch w {
		case 0:
			if n.Load() != 0 {
				t.Fatalf("after the rollback %d clients are still on the canary", n.Load())
			}
		case 100:
			if n.Load() != clients {
				t.Fatalf("at 100%% only %d clients are on the canary", n.Load())
			}
		}
	}
}

// targetingConfig has one route with rules on a header, a cookie, the
// query and the source address, all to green at weight 0.
const targetingConfig = `listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
access_log: { enabled: true }
routes:
  - name: web
    rules:
      - { name: tenant, match: { header: { X-Tenant: { in: [acme, globex] } } }, pool: green }
      - { name: beta, match: { cookie: { beta: { exact: "yes" } } }, pool: green }
      - { name: query, match: { query: { canary: { prefix: "on" } } }, pool: green }
      - { name: office, match: { source: ["127.0.0.3/32"] }, pool: green }
      - { name: firefox, match: { header: { User-Agent: { regex: ".*Firefox/1[0-9]{2}\\..*" } } }, pool: green }
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
`

// Rules send chosen requests to a pool at weight 0, over real sockets
// from several loopback addresses; the access log says why each request
// went where it did, and targeted traffic is counted apart.
func TestMatchRules(t *testing.T) {
	blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
	core, logs := observer.New(zapcore.InfoLevel)
	cfg, err := config.Parse("t.yaml", fmt.Appendf(nil, targetingConfig, blue.URL, green.URL))
	if err != nil {
		t.Fatal(err)
	}
	reg := metrics.NewRegistry()
	srv, err := New(cfg, Options{Logger: zap.New(core), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	serveFor(t, srv)
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		tr := &http.Transport{DialContext: d.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	for _, tc := range []struct {
		name, source, query string
		hdr                 map[string]string
		pool, routedBy      string
	}{
		{"no rule", "127.0.0.2", "", map[string]string{"X-Tenant": "hooli"}, "blue", "weight"},
		{"header in", "127.0.0.2", "", map[string]string{"X-Tenant": "globex"}, "green", "rule:tenant"},
		{"cookie", "127.0.0.2", "", map[string]string{"Cookie": "a=1; beta=yes"}, "green", "rule:beta"},
		{"cookie other value", "127.0.0.2", "", map[string]string{"Cookie": "beta=no"}, "blue", "weight"},
		{"query prefix", "127.0.0.2", "x=1&canary=on-please", nil, "green", "rule:query"},
		{"source", "127.0.0.3", "", nil, "green", "rule:office"},
		{"regex", "127.0.0.2", "", map[string]string{"User-Agent": "Mozilla/5.0 Firefox/128.0"}, "green", "rule:firefox"},
		{"regex no match", "127.0.0.2", "", map[string]string{"User-Agent": "Mozilla/5.0 Firefox/99.0"}, "blue", "weight"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := "http://" + srv.ProxyAddr().String() + "/?" + tc.query
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			id := "rid-" + strings.ReplaceAll(tc.name, " ", "-")
			req.Header.Set("X-Request-Id", id)
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, err := from(tc.source).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if got := resp.Header.Get("X-Backend"); got != tc.pool {
				t.Fatalf("went to %s, want %s", got, tc.pool)
			}
			var line map[string]any
			for end := time.Now().Add(2 * time.Second); line == nil && time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
				for _, e := range logs.FilterLoggerName("access").All() {
					if m := e.ContextMap(); m["request_id"] == id {
						line = m
					}
				}
			}
			if line == nil || line["routed_by"] != tc.routedBy {
				t.Fatalf("access log line %v; want routed_by %s", line, tc.routedBy)
			}
		})
	}
	if n := metricValue(t, reg, "canaryd_targeted_requests_total", `pool="green"`); n != 5 {
		t.Errorf("canaryd_targeted_requests_total{pool=green} = %v, want 5", n)
	}
	rv, _ := srv.Route("web")
	if g := rv.Pools[1].Traffic; g.Targeted.Requests != 5 || g.Weighted.Requests != 0 {
		t.Errorf("green's traffic %+v: want 5 targeted, none weighted", g)
	}
}

// segmentRig serves a route with a segment-first rollout over blue and
// green; green fails every request when failing is set.
type segmentRig struct {
	*rig
	greenWeighted atomic.Int64 // requests without the segment header that reached green
}

func startSegmentRig(t *testing.T, failing bool) *segmentRig {
	t.Helper()
	blue := newNamed(t, "blue", 0)
	sr := &segmentRig{}
	green := newBackendFunc(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Beta") == "" {
			sr.greenWeighted.Add(1)
		}
		w.Header().Set("X-Backend", "green")
		if failing {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
state_dir: %q
routes:
  - name: web
    rules:
      - { name: beta, match: { header: { X-Beta: { exact: "1" } } } }
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
    rollout:
      stable: blue
      canary: green
      segment: beta
      steps: [50, 100]
      interval: 300ms
      min_requests: 30
      failure_limit: 1
      analysis: { max_error_rate: 0.05 }
`, filepath.Join(dir, "state"), blue.URL, green))
	sr.rig = startRig(t, path)
	return sr
}

func newBackendFunc(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

// load sends requests with hdr until ctx ends, and returns the pools
// that answered, counted.
func (sr *segmentRig) load(ctx context.Context, hdr map[string]string) func() map[string]int {
	var mu sync.Mutex
	got := map[string]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sr.proxy+"/", nil)
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := sr.client.Do(req)
			if err != nil {
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			got[resp.Header.Get("X-Backend")]++
			mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	return func() map[string]int {
		<-done
		return got
	}
}

func (sr *segmentRig) waitPhase(t *testing.T, phase rollout.Phase, within time.Duration) rollout.Status {
	t.Helper()
	var st rollout.Status
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		rv, _ := sr.srv.Route("web")
		if rv.Rollout != nil {
			if st = *rv.Rollout; st.Phase == phase {
				return st
			}
		}
	}
	t.Fatalf("rollout not %s within %v: %s (%s)", phase, within, st.Phase, st.Reason)
	return st
}

// A segment-first rollout whose canary fails its segment is rolled back
// on the segment's own evidence, and no weighted user ever reached it.
func TestSegmentRolledBackOnItsOwnEvidence(t *testing.T) {
	sr := startSegmentRig(t, true)
	st := sr.waitPhase(t, rollout.SegmentPhase, 5*time.Second)
	if !st.InSegment || st.Segment != "beta" || st.CanaryWeight != 0 {
		t.Fatalf("segment phase status %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	weighted := sr.load(ctx, nil)
	segment := sr.load(ctx, map[string]string{"X-Beta": "1"})
	st = sr.waitPhase(t, rollout.RolledBack, 20*time.Second)
	cancel()
	w, s := weighted(), segment()
	if !strings.Contains(st.Reason, "error") {
		t.Errorf("rolled back for %q; want the segment's errors", st.Reason)
	}
	if n := sr.greenWeighted.Load(); n != 0 || w["green"] != 0 {
		t.Fatalf("%d weighted requests reached the canary (load saw %v)", n, w)
	}
	if s["green"] == 0 {
		t.Fatalf("the segment never reached the canary: %v", s)
	}
	// After the rollback the segment goes to stable.
	resp, err := sr.client.Do(func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, sr.proxy+"/", nil)
		req.Header.Set("X-Beta", "1")
		return req
	}())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if b := resp.Header.Get("X-Backend"); b != "blue" {
		t.Fatalf("after the rollback the segment went to %s", b)
	}
}

// A healthy canary goes from its segment phase through the weighted
// steps to promotion.
func TestSegmentPromotedThroughTheSteps(t *testing.T) {
	sr := startSegmentRig(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sr.load(ctx, nil)
	sr.load(ctx, map[string]string{"X-Beta": "1"})
	st := sr.waitPhase(t, rollout.Promoted, 30*time.Second)
	var path []string
	for _, e := range st.History {
		if e.Kind == rollout.KindTransition {
			path = append(path, string(e.To))
		}
	}
	if got := strings.Join(path, " "); !strings.Contains(got, "segment progressing promoted") {
		t.Fatalf("transitions %q; want segment, then progressing, then promoted", got)
	}
}
