package rollout

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/evidence"
	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMannWhitney(t *testing.T) {
	same := []uint64{0, 10, 20, 10, 0}
	if _, z := mannWhitney(same, same); z != 0 {
		t.Errorf("identical samples: z = %v", z)
	}
	slower := []uint64{0, 0, 10, 20, 10}
	if _, z := mannWhitney(slower, same); z < 3 {
		t.Errorf("shifted sample: z = %v, want clearly positive", z)
	}
	if _, z := mannWhitney(same, slower); z > -3 {
		t.Errorf("faster sample: z = %v, want clearly negative", z)
	}
	// All in one bucket: every value ties; the variance is 0 and z is 0.
	if _, z := mannWhitney([]uint64{0, 5}, []uint64{0, 7}); z != 0 {
		t.Errorf("all ties: z = %v", z)
	}
}

func counts(latency map[int]uint64, req, errs uint64) evidence.Counts {
	c := evidence.Counts{Requests: req, Errors: errs}
	for b, n := range latency {
		c.Latency[b] = n
	}
	return c
}

func TestCompareLatency(t *testing.T) {
	stable := counts(map[int]uint64{100: 900, 120: 100}, 1000, 0)
	slightly := counts(map[int]uint64{101: 900, 121: 100}, 1000, 0) // ~1 bucket: significant but tiny
	twice := counts(map[int]uint64{116: 900, 136: 100}, 1000, 0)    // one power of two: 2×
	if v := compareLatency(&slightly, &stable, 0.99, 1.5, time.Millisecond); v.Result != Pass {
		t.Errorf("a small slowdown: %s (%s)", v.Result, v.Reason)
	}
	if v := compareLatency(&twice, &stable, 0.99, 1.5, time.Millisecond); v.Result != Fail {
		t.Errorf("twice as slow: %s (%s)", v.Result, v.Reason)
	}
	if v := compareLatency(&stable, &twice, 0.99, 1.5, time.Millisecond); v.Result != Pass {
		t.Errorf("a faster canary: %s (%s)", v.Result, v.Reason)
	}
	// Twice as slow, but by less than the absolute floor: noise, not a
	// regression (bucket 136 is about 2.4 ms).
	if v := compareLatency(&twice, &stable, 0.99, 1.5, 10*time.Millisecond); v.Result != Pass {
		t.Errorf("2× but under the floor: %s (%s)", v.Result, v.Reason)
	}
}

func TestCompareErrors(t *testing.T) {
	for _, tc := range []struct {
		ec, nc, es, ns uint64
		want           Result
	}{
		{0, 200, 0, 20000, Inconclusive}, // no errors, but too few requests to say the canary is not worse
		{0, 1000, 0, 20000, Pass},        // no errors anywhere
		{2, 1000, 100, 10000, Pass},      // better than stable
		{10, 1000, 100, 10000, Pass},     // as good
		{60, 1000, 100, 10000, Fail},     // 6× worse
		{1, 200, 0, 20000, Inconclusive},
	} {
		if v := compareErrors(tc.ec, tc.nc, tc.es, tc.ns, 0.99, 1.5, 0.005); v.Result != tc.want {
			t.Errorf("canary %d/%d, stable %d/%d: %s, want %s (%s)", tc.ec, tc.nc, tc.es, tc.ns, v.Result, tc.want, v.Reason)
		}
	}
}

func TestTripwire(t *testing.T) {
	tw := config.Tripwire{Window: config.Duration(10 * time.Second), MinRequests: 20, MaxErrorRate: 0.5}
	for _, tc := range []struct {
		cr, ce, sr, se uint64
		fire           bool
	}{
		{19, 19, 100, 0, false}, // not enough canary requests
		{20, 10, 100, 0, true},
		{20, 9, 100, 0, false},
		{40, 40, 100, 30, false}, // everyone is failing: not the canary's fault
	} {
		if _, got := tripwire(tw, tc.cr, tc.ce, tc.sr, tc.se, 10*time.Second); got != tc.fire {
			t.Errorf("%+v: fire %v", tc, got)
		}
	}
}

// sim is synthetic traffic for the simulation: cumulative counts per pool.
type sim struct {
	mu sync.Mutex
	c  map[string]*evidence.Traffic
	sh map[string]*evidence.Shadow
}

func newSim() *sim { return &sim{c: map[string]*evidence.Traffic{}, sh: map[string]*evidence.Shadow{}} }

func (s *sim) ShadowTraffic(route, pool string) evidence.Shadow {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.sh[pool]; c != nil {
		return *c
	}
	return evidence.Shadow{}
}

// addShadow counts n copies to a pool, errs of them failed (and their
// real answers fine), mismatched of them differing.
func (s *sim) addShadow(pool string, n, errs, mismatched uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.sh[pool]
	if c == nil {
		c = &evidence.Shadow{}
		s.sh[pool] = c
	}
	addCounts(&c.Copies, n, errs)
	addCounts(&c.Primaries, n, 0)
	c.Compared += n
	c.Mismatches += mismatched
}

func (s *sim) PoolTraffic(route, pool string) evidence.Traffic {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.c[pool]; c != nil {
		return *c
	}
	return evidence.Traffic{}
}

func (s *sim) pool(name string) *evidence.Traffic {
	c := s.c[name]
	if c == nil {
		c = &evidence.Traffic{}
		s.c[name] = c
	}
	return c
}

// add counts n weighted requests of a pool, errs of them failed, all at
// one latency.
func (s *sim) add(pool string, n, errs uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	addCounts(&s.pool(pool).Weighted, n, errs)
}

// addPreview counts n forced requests of a pool.
func (s *sim) addPreview(pool string, n, errs uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	addCounts(&s.pool(pool).Preview, n, errs)
}

func addCounts(c *evidence.Counts, n, errs uint64) {
	c.Requests += n
	c.Errors += errs
	c.Latency[100] += n
}

type allUp struct{}

func (allUp) PoolSummary(string, string) (int, int, int) { return 1, 1, 0 }

// A handful of crafted failing requests cannot roll back a release: the
// sample gate and the comparison over the whole step hold.
func TestFewCraftedFailuresDoNotRollBack(t *testing.T) {
	traffic := newSim()
	m := NewManager(Deps{Counters: traffic, Pools: allUp{},
		Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
	cfg, _ := config.Parse("a.yaml", []byte(`routes:
  - name: web
    rollout: { stable: blue, canary: green, steps: [10, 100], min_requests: 200, failure_limit: 1, analysis: { compare_to_stable: {} } }
    pools:
      - { name: blue, weight: 100, instances: ["127.0.0.1:1"] }
      - { name: green, weight: 0, instances: ["127.0.0.1:2"] }
`))
	m.Sync(cfg.Routes)
	c := m.get("web")
	// Ten crafted requests, all failing, then ordinary traffic in which
	// they are a few among many: never a rollback, and in the end the
	// release goes on.
	traffic.add("green", 10, 10)
	traffic.add("blue", 90, 0)
	for i := 0; i < 10; i++ {
		c.analyse(context.Background())
		if s := c.status(); s.Phase == RolledBack {
			t.Fatalf("rolled back by crafted failures after %d ordinary batches: %s", i, s.Reason)
		}
		traffic.add("green", 400, 4)
		traffic.add("blue", 3600, 36)
	}
	if s := c.status(); s.Phase != Promoted {
		t.Errorf("after ordinary traffic: %s (%s)", s.Phase, s.Reason)
	}
}

func TestStateSavedAtomicallyAndResumed(t *testing.T) {
	dir := t.TempDir()
	traffic := newSim()
	deps := Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: dir}
	cfg, _ := config.Parse("s.yaml", []byte(`routes:
  - name: web
    rollout: { stable: blue, canary: green, steps: [10, 50, 100], min_requests: 10 }
    pools:
      - { name: blue, weight: 100, instances: ["127.0.0.1:1"] }
      - { name: green, weight: 0, instances: ["127.0.0.1:2"] }
`))
	m := NewManager(deps)
	m.Sync(cfg.Routes)
	traffic.add("green", 100, 0)
	traffic.add("blue", 900, 0)
	m.get("web").analyse(context.Background())
	m.get("web").persist()
	if o := overridesOf(m)["web"]; o.CanaryBP != 5000 {
		t.Fatalf("after one passing analysis the canary is at %d bp", o.CanaryBP)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "rollout-web.json" {
		t.Errorf("state dir holds %v; want only the state file (no temp leftovers)", entries)
	}
	// A new process resumes at the same step and weights.
	m2 := NewManager(deps)
	m2.Sync(cfg.Routes)
	st, _ := m2.Status("web")
	if st.Phase != Progressing || st.Step != 2 || st.CanaryWeight != 50 || !strings.Contains(st.Reason, "resumed after restart") {
		t.Errorf("after restart: %+v", st)
	}
	// A different canary release starts over.
	cfg2, _ := config.Parse("s.yaml", []byte(strings.Replace(`routes:
  - name: web
    rollout: { stable: blue, canary: green, steps: [10, 50, 100], min_requests: 10 }
    pools:
      - { name: blue, weight: 100, instances: ["127.0.0.1:1"] }
      - { name: green, weight: 0, instances: ["127.0.0.1:2"] }
`, "127.0.0.1:2", "127.0.0.1:3", 1)))
	m2.Sync(cfg2.Routes)
	if st, _ := m2.Status("web"); st.Step != 1 || st.CanaryWeight != 10 || !strings.Contains(st.Reason, "new release") {
		t.Errorf("new release: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "rollout-web.json")); err != nil {
		t.Error(err)
	}
}

func TestControls(t *testing.T) {
	traffic := newSim()
	m := NewManager(Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
	cfg, _ := config.Parse("c.yaml", []byte(`routes:
  - name: web
    rollout: { stable: blue, canary: green, steps: [10, 50, 100], pause_before: [50] }
    pools:
      - { name: blue, weight: 100, instances: ["127.0.0.1:1"] }
      - { name: green, weight: 0, instances: ["127.0.0.1:2"] }
`))
	m.Sync(cfg.Routes)
	step := func(action Action, wantPhase Phase, wantWeight float64) {
		t.Helper()
		st, err := m.Control("web", action)
		if err != nil || st.Phase != wantPhase || st.CanaryWeight != wantWeight {
			t.Fatalf("%s: %s at %.0f%% (%v); want %s at %.0f%%", action, st.Phase, st.CanaryWeight, err, wantPhase, wantWeight)
		}
	}
	step("pause", Paused, 10)
	if _, err := m.Control("web", "pause"); err == nil {
		t.Error("pausing a paused rollout worked")
	}
	step("resume", Progressing, 10)
	// The manual gate stops before 50% even though analysis passes.
	traffic.add("green", 500, 0)
	traffic.add("blue", 4500, 0)
	m.get("web").analyse(context.Background())
	if st, _ := m.Status("web"); st.Phase != Paused || !strings.Contains(st.Reason, "manual gate before 50%") {
		t.Fatalf("gate: %+v", st)
	}
	step("resume", Progressing, 50)
	step("abort", RolledBack, 0)
	step("resume", Progressing, 10) // retry from the first step
	step("promote", Promoted, 100)
	step("abort", RolledBack, 0) // instant rollback after promotion
	if _, err := m.Control("nope", "abort"); err != ErrNoRollout {
		t.Errorf("unknown route: %v", err)
	}
}

// Every transition is POSTed to the webhook as JSON; a failed delivery is
// retried; the rollout metrics follow the state.
func TestWebhookAndMetrics(t *testing.T) {
	var mu sync.Mutex
	var got []webhookPayload
	attempts := 0
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts == 1 {
			w.WriteHeader(http.StatusInternalServerError) // the first delivery fails
			return
		}
		var p webhookPayload
		if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&p) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got = append(got, p)
	}))
	defer hook.Close()
	reg := prometheus.NewRegistry()
	traffic := newSim()
	m := NewManager(Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(reg), StateDir: t.TempDir()})
	routes := webRoutes(t, `{ stable: blue, canary: green, steps: [10, 100], min_requests: 10, webhook: { url: "`+hook.URL+`", timeout: 1s, retries: 2 } }`)
	m.SetWebhooks(routes)
	m.Start()
	defer m.Close()
	m.Sync(routes) // start: idle → progressing
	if _, err := m.Control("web", "abort"); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 2 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].To != Progressing || got[1].To != RolledBack || got[1].Route != "web" || got[1].Reason != "aborted by operator" {
		t.Fatalf("webhook got %+v after %d attempts", got, attempts)
	}
	if attempts != 3 {
		t.Errorf("%d delivery attempts, want 3 (one failed, retried)", attempts)
	}
	mfs, _ := reg.Gather()
	state := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "canaryd_rollout_state" {
			for _, mm := range mf.GetMetric() {
				for _, l := range mm.GetLabel() {
					if l.GetName() == "state" {
						state[l.GetValue()] = mm.GetGauge().GetValue()
					}
				}
			}
		}
	}
	if state[RolledBack.String()] != 1 || state[Progressing.String()] != 0 {
		t.Errorf("canaryd_rollout_state: %v", state)
	}
}

// overridesOf is what Sync would return now.
func overridesOf(m *Manager) map[string]Override {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.overridesLocked()
}
