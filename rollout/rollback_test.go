package rollout

import (
	"strings"
	"sync"
	"testing"
	"time"

	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

// closer records the streams it is asked to end (the proxy's registry is
// exercised for real in app's TestRollbackClosesTheCanarysStreams).
type closer struct {
	mu    sync.Mutex
	calls []string
}

func (c *closer) CloseStreams(route, pool string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, route+"/"+pool)
	return 3
}

// A gradual rollback steps the canary down its steps below the weight it
// had; the tripwire during it goes to 0 at once; the canary's streams end
// close_streams_after the weight reaches 0.
func TestGradualRollback(t *testing.T) {
	setup := func(t *testing.T) (*Manager, *controller, *sim, *closer) {
		traffic := newSim()
		cl := &closer{}
		m := NewManager(Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir(), Streams: cl})
		m.Sync(webRoutes(t, `{ stable: blue, canary: green, steps: [10, 60, 100], tripwire: { window: 1s, min_requests: 10 },
      rollback: { mode: gradual, steps: [70, 50, 20, 0], interval: 2s, close_streams_after: 5s } }`))
		c := m.get("web")
		c.mu.Lock()
		c.enterStepLocked(time.Now(), 1) // at 60%
		c.mu.Unlock()
		st, err := m.Control("web", Abort)
		if err != nil || st.Phase != RolledBack || st.CanaryWeight != 50 || !strings.Contains(st.Reason, "gradual rollback (rollback.mode): canary to 50%, then down every 2s") {
			t.Fatalf("abort: %v: %s at %v%%: %s", err, st.Phase, st.CanaryWeight, st.Reason)
		}
		return m, c, traffic, cl
	}
	t.Run("steps down", func(t *testing.T) {
		m, c, _, cl := setup(t)
		now := time.Now()
		c.unwind(now.Add(time.Second)) // not yet
		if st, _ := m.Status("web"); st.CanaryWeight != 50 {
			t.Fatalf("before the interval: %v%%", st.CanaryWeight)
		}
		c.unwind(now.Add(2 * time.Second))
		if o := overridesOf(m)["web"]; o.CanaryBP != 2000 {
			t.Fatalf("after an interval: %d bp", o.CanaryBP)
		}
		c.unwind(now.Add(4 * time.Second))
		st, _ := m.Status("web")
		if st.CanaryWeight != 0 || st.History[len(st.History)-1].Reason != "gradual rollback: canary to 0%" {
			t.Fatalf("at the end: %v%% (%s)", st.CanaryWeight, st.History[len(st.History)-1].Reason)
		}
		m.closeDue(now.Add(8 * time.Second)) // 0% at 4s, closing at 9s
		if len(cl.calls) != 0 {
			t.Fatalf("streams closed before close_streams_after: %v", cl.calls)
		}
		m.closeDue(now.Add(9 * time.Second))
		m.closeDue(now.Add(10 * time.Second)) // once only
		if strings.Join(cl.calls, ",") != "web/green" {
			t.Fatalf("closed %v", cl.calls)
		}
		st, _ = m.Status("web")
		if last := st.History[len(st.History)-1]; !strings.Contains(last.Reason, "closed 3 streams") {
			t.Errorf("history: %s", last.Reason)
		}
	})
	t.Run("abort cuts it short", func(t *testing.T) {
		m, _, _, _ := setup(t)
		st, err := m.Control("web", Abort)
		if err != nil || st.CanaryWeight != 0 || !strings.Contains(st.Reason, "aborted by operator during the gradual rollback: canary to 0% at once") {
			t.Errorf("%v: %v%%: %s", err, st.CanaryWeight, st.Reason)
		}
		if _, err := m.Control("web", Abort); err == nil {
			t.Error("abort of a rollout rolled back to 0% worked")
		}
	})
	t.Run("the tripwire cuts it short", func(t *testing.T) {
		m, c, traffic, _ := setup(t)
		now := time.Now()
		c.tripwireFired(now)
		traffic.add("green", 50, 50)
		if !c.tripwireFired(now.Add(1100 * time.Millisecond)) {
			t.Fatal("the tripwire did not fire during the gradual rollback")
		}
		st, _ := m.Status("web")
		if st.CanaryWeight != 0 || !strings.Contains(st.Reason, "during the gradual rollback: canary to 0% at once") {
			t.Errorf("%v%%: %s", st.CanaryWeight, st.Reason)
		}
	})
}
