package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/rollout"
)

// scrape returns the value of the sample of /metrics whose line starts
// with prefix (name and labels), or -1 when there is none.
func scrape(t *testing.T, adminAddr, prefix string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, prefix) {
			v, err := strconv.ParseFloat(strings.TrimSpace(line[len(prefix):]), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

func shadowRoute(blue, green, rolloutBlock string) string {
	return fmt.Sprintf(`  - name: web
    rollout: %s
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
`, strings.Replace(rolloutBlock, "{", "{ stable: blue, canary: green,", 1), blue, green)
}

func phases(st rollout.Status) string {
	var out []string
	for _, e := range st.History {
		if e.Kind == rollout.KindTransition {
			out = append(out, e.To.String())
		}
	}
	return strings.Join(out, " ")
}

// A canary failing every request is rolled back during the shadow phase,
// and no client saw one of its failures: it only ever got copies.
func TestShadowRollsBackAFailingCanaryWithNoClientErrors(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green", "--error-rate", "1")
	adminAddr := freeAddr(t)
	c := runCanaryd(t, t.TempDir(), adminAddr, shadowRoute(blue, green,
		`{ steps: [10, 100], interval: 500ms, min_requests: 20, shadow: { percent: 50, min_requests: 30 } }`))
	if st := c.status(t, "web"); st.Phase != rollout.Shadowing {
		t.Fatalf("the rollout starts %s, want shadowing", st.Phase)
	}
	if v := scrape(t, adminAddr, `canaryd_rollout_state{route="web",state="shadowing"}`); v != 1 {
		t.Errorf("canaryd_rollout_state shadowing = %v", v)
	}
	if out, err := exec.Command(binary, "status", "web", "--admin", adminAddr).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "shadowing, shadow phase: copies of 50.00% of requests, no live traffic") {
		t.Errorf("canaryd status in the shadow phase: %v\n%s", err, out)
	}
	g := startLoad(c.proxy+"/", 4, nil)
	st := c.waitPhase(t, "web", rollout.RolledBack, 30*time.Second)
	g.halt()
	t.Logf("rolled back: %s; %d of %d client requests failed; by pool %v", st.Reason, g.failed.Load(), g.total.Load(), g.byPool)
	if n := g.failed.Load(); n != 0 {
		t.Errorf("%d client requests failed; the canary only got copies", n)
	}
	if g.byPool["green"] != 0 {
		t.Errorf("%d client answers came from green during the shadow phase", g.byPool["green"])
	}
	if got := phases(st); got != "shadowing rolled_back" {
		t.Errorf("history: %s", got)
	}
	if n := scrape(t, adminAddr, `canaryd_shadow_requests_total{pool="green",result="error"}`); n != -1 {
		t.Errorf("copies counted as errors (no answer): %v; the canary answered 500s", n)
	}
	if n := scrape(t, adminAddr, `canaryd_shadow_requests_total{pool="green",result="mismatch",route="web"}`); n < 20 {
		t.Errorf("canaryd_shadow_requests_total mismatch = %v", n)
	}
	if n := scrape(t, adminAddr, `canaryd_shadow_requests_total{pool="green",result="sent",route="web"}`); n < 30 {
		t.Errorf("canaryd_shadow_requests_total sent = %v", n)
	}
}

// A healthy canary passes the shadow phase into its first live step.
func TestShadowHealthyCanaryGoesLive(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	c := runCanaryd(t, t.TempDir(), freeAddr(t), shadowRoute(blue, green,
		`{ steps: [10, 100], interval: 500ms, min_requests: 20, pause_before: [100], shadow: { percent: 50, min_requests: 50 } }`))
	g := startLoad(c.proxy+"/", 4, nil)
	st := c.waitPhase(t, "web", rollout.Paused, 30*time.Second)
	g.halt()
	if got := phases(st); got != "shadowing progressing paused" || st.CanaryWeight != 10 {
		t.Fatalf("history %q, canary at %v%%", got, st.CanaryWeight)
	}
	for _, e := range st.History {
		if e.From == rollout.Shadowing && e.To == rollout.Progressing && !strings.Contains(e.Reason, "shadow phase passed") {
			t.Errorf("shadow → live: %s", e.Reason)
		}
	}
	out, _ := exec.Command(binary, "status", "web", "--admin", c.admin).CombinedOutput()
	if !strings.Contains(string(out), "paused, step 1 of 2 (canary 10.00%)") {
		t.Errorf("canaryd status:\n%s", out)
	}
}

// The shadow header reaches the canary on every copy, POST is not copied
// by default, and with compare: body a canary that answers 200 with a
// different body is caught.
func TestShadowComparesBodies(t *testing.T) {
	var mu sync.Mutex
	methods := map[string]int{}
	unmarked := 0
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		methods[r.Method]++
		if r.Header.Get("X-Canary-Shadow") != "1" || r.Header.Get("X-Request-Id") == "" {
			unmarked++
		}
		mu.Unlock()
		io.WriteString(w, "v2")
	}))
	defer green.Close()
	blue := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "v1")
	}))
	defer blue.Close()
	c := runCanaryd(t, t.TempDir(), freeAddr(t), shadowRoute(blue.URL, green.URL,
		`{ steps: [10, 100], interval: 500ms, min_requests: 20, shadow: { percent: 100, min_requests: 30, compare: [status, body] } }`))
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 200 && c.status(t, "web").Phase == rollout.Shadowing; i++ {
		req, _ := http.NewRequest(http.MethodGet, c.proxy+"/", nil)
		if i%4 == 0 {
			req, _ = http.NewRequest(http.MethodPost, c.proxy+"/", strings.NewReader("x"))
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "v1" {
			t.Fatalf("a client got %q", b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	st := c.waitPhase(t, "web", rollout.RolledBack, 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("rolled back: %s; green saw %v", st.Reason, methods)
	if !strings.Contains(st.Reason, "shadow_mismatch") {
		t.Errorf("rolled back for %q, want shadow_mismatch", st.Reason)
	}
	if methods[http.MethodPost] != 0 || methods[http.MethodGet] == 0 {
		t.Errorf("green saw %v: POST copied, or no copy at all", methods)
	}
	if unmarked != 0 {
		t.Errorf("%d copies without the shadow header or the request id", unmarked)
	}
}

// A slow canary (+1 s an answer) adds no latency to clients: copies wait
// in the bounded queue, and the rest are dropped and counted.
func TestShadowSlowCanaryAddsNoLatency(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green", "--latency", "1s")
	adminAddr := freeAddr(t)
	c := runCanaryd(t, t.TempDir(), adminAddr, shadowRoute(blue, green,
		`{ steps: [10, 100], interval: 1s, min_requests: 1000, shadow: { percent: 100, min_requests: 1000, queue: 8, concurrency: 2 } }`))
	var lat []time.Duration
	for i := 0; i < 200; i++ {
		start := time.Now()
		if code, pool := get(t, c.proxy+"/", nil); code != 200 || pool != "blue" {
			t.Fatalf("%d from %s", code, pool)
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p99 := lat[len(lat)*99/100]
	dropped := scrape(t, adminAddr, `canaryd_shadow_requests_total{pool="green",result="dropped",route="web"}`)
	t.Logf("client p50 %v, p99 %v with a 1 s canary; %v copies dropped", lat[len(lat)/2], p99, dropped)
	if p99 > 500*time.Millisecond {
		t.Errorf("client p99 %v: the clients waited for the slow copies", p99)
	}
	if dropped < 150 {
		t.Errorf("%v copies dropped; with 2 in flight and 8 queued, about 190 of 200 must be", dropped)
	}
}

// routes[].mirror without a rollout: half the requests are copied, and a
// config edit that removes the mirror stops the copies (its workers are
// retired).
func TestRouteMirrorFollowsTheConfig(t *testing.T) {
	var copies atomic.Int64
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Canary-Shadow") == "1" {
			copies.Add(1)
		}
		io.WriteString(w, "ok")
	}))
	defer green.Close()
	blue := backendProc(t, "blue")
	routes := fmt.Sprintf(`  - name: web
    mirror: { pool: green, percent: 50 }
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
`, blue, green.URL)
	adminAddr := freeAddr(t)
	c := runCanaryd(t, t.TempDir(), adminAddr, routes)
	for i := 0; i < 100; i++ {
		if code, pool := get(t, c.proxy+"/", nil); code != 200 || pool != "blue" {
			t.Fatalf("%d from %s", code, pool)
		}
	}
	for end := time.Now().Add(5 * time.Second); copies.Load() < 50 && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
	}
	if n := copies.Load(); n != 50 {
		t.Fatalf("%d copies of 100 requests at 50%%", n)
	}
	data, _ := os.ReadFile(c.cfgPath)
	if err := os.WriteFile(c.cfgPath, []byte(strings.Replace(string(data), "    mirror: { pool: green, percent: 50 }\n", "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.p.waitLog(t, "config applied")
	for i := 0; i < 100; i++ {
		get(t, c.proxy+"/", nil)
	}
	time.Sleep(100 * time.Millisecond)
	if n := copies.Load(); n != 50 {
		t.Errorf("%d copies after the mirror was removed, want still 50", n)
	}
	if v := scrape(t, adminAddr, `canaryd_shadow_requests_total{pool="green",result="sent",route="web"}`); v != 50 {
		t.Errorf("canaryd_shadow_requests_total sent = %v", v)
	}
}
