package health_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/balancer"
	"canaryd/health"
	"canaryd/upstream"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type events struct {
	mu      sync.Mutex
	trans   []health.Transition
	refused []string
}

func (e *events) Transition(t health.Transition) {
	e.mu.Lock()
	e.trans = append(e.trans, t)
	e.mu.Unlock()
}

func (e *events) EjectionRefused(t health.Target, reason string) {
	e.mu.Lock()
	e.refused = append(e.refused, t.Addr+": "+reason)
	e.mu.Unlock()
}

func (e *events) transitions() []health.Transition {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]health.Transition(nil), e.trans...)
}

func passive() health.Config {
	return health.Config{
		Interval: time.Second, UnhealthyInterval: time.Second, Timeout: 500 * time.Millisecond,
		Rise: 2, Fall: 3, StatusLo: 200, StatusHi: 399,
		Passive: upstream.Passive{ConsecutiveFailures: 5, EjectFor: 300 * time.Millisecond, MaxEjectFor: 700 * time.Millisecond, MaxEjectedPercent: 50},
	}
}

// world is a real router with one route of n instances in pool "p", and a
// checker feeding it.
type world struct {
	router  *balancer.Router
	checker *health.Checker
	ev      *events
	targets []health.Target
	recs    []*health.Instance
}

func newWorld(t *testing.T, cfg health.Config, urls ...string) *world {
	w := &world{router: balancer.NewRouter(), ev: &events{}}
	ps := balancer.PoolSpec{Name: "p", Weight: balancer.Slots}
	for _, raw := range urls {
		u, _ := url.Parse(raw)
		ps.Instances = append(ps.Instances, u)
		w.targets = append(w.targets, health.Target{Route: "r", Pool: "p", Addr: u.String(), URL: u, Config: cfg})
	}
	if _, err := w.router.Apply([]balancer.RouteSpec{{Name: "r", PathPrefix: "/", Pools: []balancer.PoolSpec{ps}}}); err != nil {
		t.Fatal(err)
	}
	// As canaryd does: each target is the table's own record of the
	// instance, which health's verdicts flip.
	for i, in := range w.router.Load().Route("r").Pools[0].Instances {
		w.targets[i].Instance = in
	}
	w.checker = health.New(w.router, w.ev)
	t.Cleanup(w.checker.Close)
	w.recs = w.checker.Sync(w.targets)
	w.checker.Start()
	return w
}

func (w *world) available(i int) bool {
	for _, in := range w.router.Load().Route("r").Pools[0].Instances {
		if in.Addr == w.targets[i].Addr {
			return in.Available()
		}
	}
	return false
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v", what, within)
	return 0
}

// probed serves /healthz with the status fail() picks, and counts probes.
func probed(t *testing.T, fail func(n int64) bool) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			return
		}
		if fail(n.Add(1)) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(s.Close)
	return s, &n
}

func activeCfg() health.Config {
	c := passive()
	c.ProbePath = "/healthz"
	c.Interval, c.UnhealthyInterval, c.Timeout = 50*time.Millisecond, 50*time.Millisecond, 40*time.Millisecond
	return c
}

// With fall 3, an instance that fails every other probe is never taken out.
func TestFlappingInstanceIsNeverEjected(t *testing.T) {
	flap, probes := probed(t, func(n int64) bool { return n%2 == 0 })
	w := newWorld(t, activeCfg(), flap.URL)
	eventually(t, 10*time.Second, "40 probes", func() bool { return probes.Load() >= 40 })
	if tr := w.ev.transitions(); len(tr) != 0 || !w.available(0) {
		t.Errorf("flapping instance changed state: %v", tr)
	}
}

// A failing instance goes down after fall probes and comes back after rise.
func TestActiveProbeFallAndRise(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	s, probes := probed(t, func(int64) bool { return failing.Load() })
	w := newWorld(t, activeCfg(), s.URL)
	eventually(t, 5*time.Second, "marked down", func() bool { return !w.available(0) })
	if n := probes.Load(); n < 3 {
		t.Errorf("down after %d probes, want fall=3", n)
	}
	failing.Store(false)
	at := probes.Load()
	eventually(t, 5*time.Second, "back up", func() bool { return w.available(0) })
	if n := probes.Load() - at; n < 2 {
		t.Errorf("up after %d passing probes, want rise=2", n)
	}
	// The router hears of a transition just before Events does.
	eventually(t, time.Second, "two events", func() bool { return len(w.ev.transitions()) == 2 })
	tr := w.ev.transitions()
	if len(tr) != 2 || tr[0].Up || !tr[1].Up || tr[0].Source != health.Active {
		t.Errorf("transitions: %+v", tr)
	}
}

func TestPassiveEjection(t *testing.T) {
	w := newWorld(t, passive(), "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3", "http://127.0.0.1:4")
	a := w.recs[0]
	// Four failures, then a success: the run is broken, nothing happens.
	for i := 0; i < 4; i++ {
		a.Observe(502, true, false)
	}
	a.Observe(200, false, false)
	for i := 0; i < 4; i++ {
		a.Observe(502, true, false)
	}
	// Client cancellations are no evidence and do not break the run either.
	for i := 0; i < 10; i++ {
		a.Observe(499, false, true)
	}
	if !w.available(0) {
		t.Fatal("ejected before 5 consecutive failures")
	}
	a.Observe(504, true, false)
	if w.available(0) || !a.Ejected() {
		t.Fatal("not ejected after 5 consecutive gateway failures")
	}
	back := eventually(t, 3*time.Second, "first ejection over", func() bool { return w.available(0) })
	// A second ejection lasts twice as long, a third is capped.
	for i := 0; i < 5; i++ {
		a.Observe(502, true, false)
	}
	second := eventually(t, 3*time.Second, "second ejection over", func() bool { return w.available(0) })
	for i := 0; i < 5; i++ {
		a.Observe(502, true, false)
	}
	third := eventually(t, 3*time.Second, "third ejection over", func() bool { return w.available(0) })
	t.Logf("ejections lasted %v, %v, %v (eject_for 300ms, max 700ms)", back, second, third)
	if back > 600*time.Millisecond || second < 550*time.Millisecond || third > 1100*time.Millisecond || third < 650*time.Millisecond {
		t.Errorf("ejection lengths %v %v %v; want ~300ms, ~600ms, ~700ms (capped)", back, second, third)
	}
	var passiveDown int
	for _, tr := range w.ev.transitions() {
		if !tr.Up && tr.Source == health.Passive {
			passiveDown++
		}
	}
	if passiveDown != 3 {
		t.Errorf("%d ejections reported, want 3", passiveDown)
	}
}

func TestConsecutive5xxEjection(t *testing.T) {
	cfg := passive()
	cfg.Passive.ConsecutiveFailures = 0
	cfg.Passive.Consecutive5xx = 3
	w := newWorld(t, cfg, "http://127.0.0.1:1", "http://127.0.0.1:2")
	// A 502 is a 5xx too, but a success breaks the run.
	for i := 0; i < 10; i++ {
		w.recs[1].Observe(502, true, false)
		w.recs[1].Observe(502, true, false)
		w.recs[1].Observe(200, false, false)
	}
	w.recs[0].Observe(500, false, false)
	w.recs[0].Observe(503, false, false)
	if !w.available(0) || !w.available(1) {
		t.Fatal("ejected too early")
	}
	w.recs[0].Observe(500, false, false)
	if w.available(0) {
		t.Error("not ejected after 3 consecutive 5xx")
	}
}

func TestMaxEjectedPercent(t *testing.T) {
	w := newWorld(t, passive(), "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3", "http://127.0.0.1:4")
	for _, rec := range w.recs {
		for i := 0; i < 5; i++ {
			rec.Observe(502, true, false)
		}
	}
	total, avail, ejected := w.checker.PoolSummary("r", "p")
	if total != 4 || ejected != 2 || avail != 2 {
		t.Errorf("4 failing instances, max 50%%: total %d available %d ejected %d; want 4/2/2", total, avail, ejected)
	}
	if len(w.ev.refused) != 2 {
		t.Errorf("refusals: %v", w.ev.refused)
	}
	// A single instance may always be ejected, whatever the percent.
	cfg := passive()
	cfg.Passive.MaxEjectedPercent = 0
	one := newWorld(t, cfg, "http://127.0.0.1:9")
	for i := 0; i < 5; i++ {
		one.recs[0].Observe(502, true, false)
	}
	if one.available(0) {
		t.Error("max_ejected_percent 0 kept the first ejection from happening")
	}
}

func TestSyncKeepsStateAndDropsRemoved(t *testing.T) {
	w := newWorld(t, passive(), "http://127.0.0.1:1", "http://127.0.0.1:2")
	for i := 0; i < 5; i++ {
		w.recs[0].Observe(502, true, false)
	}
	again := w.checker.Sync(w.targets)
	if again[0] != w.recs[0] || !again[0].Ejected() {
		t.Error("a kept instance lost its ejection across Sync")
	}
	w.checker.Sync(w.targets[1:])
	if total, _, _ := w.checker.PoolSummary("r", "p"); total != 1 {
		t.Errorf("removed instance still judged: total %d", total)
	}
	// A record dropped by Sync cannot eject anything any more.
	for i := 0; i < 5; i++ {
		w.recs[0].Observe(502, true, false)
	}
	if n := len(w.ev.transitions()); n != 1 {
		t.Errorf("%d transitions, want only the first ejection", n)
	}
}

func TestProbeSettingsChangeRestartsProbes(t *testing.T) {
	s, probes := probed(t, func(int64) bool { return false })
	cfg := activeCfg()
	cfg.Interval, cfg.UnhealthyInterval = time.Hour, time.Hour
	w := newWorld(t, cfg, s.URL)
	time.Sleep(100 * time.Millisecond)
	before := probes.Load()
	fast := activeCfg()
	for i := range w.targets {
		w.targets[i].Config = fast
	}
	w.checker.Sync(w.targets)
	eventually(t, 3*time.Second, "probes at the new interval", func() bool { return probes.Load() >= before+5 })
}

func BenchmarkObserve(b *testing.B) {
	w := &world{router: balancer.NewRouter(), ev: &events{}}
	u, _ := url.Parse("http://127.0.0.1:1")
	c := health.New(w.router, w.ev)
	defer c.Close()
	recs := c.Sync([]health.Target{{Route: "r", Pool: "p", Addr: u.String(), URL: u, Config: passive()}})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			recs[0].Observe(200, false, false)
		}
	})
}

// Probes that recover from down lift a passive ejection; probes that never
// failed leave it alone.
func TestRecoveringProbesLiftEjection(t *testing.T) {
	var failing atomic.Bool
	s, _ := probed(t, func(int64) bool { return failing.Load() })
	cfg := activeCfg()
	cfg.Passive.EjectFor, cfg.Passive.MaxEjectFor = time.Hour, time.Hour
	w := newWorld(t, cfg, s.URL)
	for i := 0; i < 5; i++ {
		w.recs[0].Observe(502, true, false)
	}
	time.Sleep(300 * time.Millisecond) // passing probes go on
	if w.available(0) {
		t.Fatal("passing probes lifted an ejection without having failed")
	}
	failing.Store(true)
	time.Sleep(300 * time.Millisecond) // several probes fail at 50ms intervals
	failing.Store(false)
	eventually(t, 5*time.Second, "back after recovery", func() bool { return w.available(0) })
	if w.recs[0].Ejected() {
		t.Error("still marked ejected")
	}
}

// Gateway failures counted before an instance went out (here: 4, one short
// of ejection, and then probes take it out) are forgotten when it comes
// back: the first failure after its return does not eject it.
func TestReadmittedInstanceStartsWithACleanCount(t *testing.T) {
	var failing atomic.Bool
	s, _ := probed(t, func(int64) bool { return failing.Load() })
	w := newWorld(t, activeCfg(), s.URL)
	for i := 0; i < 4; i++ {
		w.recs[0].Observe(502, true, false)
	}
	failing.Store(true)
	eventually(t, 5*time.Second, "probed down", func() bool { return !w.available(0) })
	failing.Store(false)
	eventually(t, 5*time.Second, "probed back", func() bool { return w.available(0) })
	w.recs[0].Observe(502, true, false)
	if w.recs[0].Ejected() || !w.available(0) {
		t.Errorf("one failure after coming back ejected it: %+v", w.ev.transitions())
	}
}
