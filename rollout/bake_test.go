package rollout

import (
	"context"
	"strings"
	"testing"
	"time"

	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

// The bake after 100%: it judges the canary against its own bounds (not
// against stable, which has no traffic left), ends once its time is up
// with a passing analysis, and reverts at once on a failure.
func TestBake(t *testing.T) {
	setup := func(t *testing.T, extra string) (*Manager, *controller, *sim) {
		traffic := newSim()
		m := NewManager(Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
		m.Sync(webRoutes(t, `{ stable: blue, canary: green, steps: [50, 100], min_requests: 100, failure_limit: 3,
      analysis: { max_error_rate: 0.05, compare_to_stable: {} }, bake: { duration: 1h } `+extra+` }`))
		c := m.get("web")
		traffic.add("green", 1000, 0)
		traffic.add("blue", 1000, 0)
		c.analyse(context.Background())
		st, _ := m.Status("web")
		if st.Phase != Baking || st.CanaryWeight != 100 || st.BakeUntil.IsZero() || !strings.Contains(st.Reason, "baking for 1h0m0s") {
			t.Fatalf("after the last step: %s at %v%% until %v: %s", st.Phase, st.CanaryWeight, st.BakeUntil, st.Reason)
		}
		if o := overridesOf(m)["web"]; o.CanaryBP != 10000 || !o.UnderWay {
			t.Fatalf("override while baking: %+v", o)
		}
		return m, c, traffic
	}
	t.Run("passes", func(t *testing.T) {
		m, c, traffic := setup(t, "")
		// No stable traffic at all: compare_to_stable is not judged.
		traffic.add("green", 1000, 0)
		c.analyse(context.Background())
		if st, _ := m.Status("web"); st.Phase != Baking {
			t.Fatalf("before the bake's end: %s (%s)", st.Phase, st.Reason)
		}
		c.mu.Lock()
		c.st.BakeUntil = time.Now().Add(-time.Second) // the hour is up
		c.mu.Unlock()
		traffic.add("green", 1000, 0)
		c.analyse(context.Background())
		st, _ := m.Status("web")
		if st.Phase != Promoted || !strings.Contains(st.Reason, "bake passed") || !st.BakeUntil.IsZero() {
			t.Fatalf("after the bake: %s (%s)", st.Phase, st.Reason)
		}
		for _, v := range st.LastVerdicts {
			if strings.HasPrefix(v.Check, "compare") {
				t.Errorf("the bake judged %s", v.Check)
			}
		}
	})
	t.Run("fails at once", func(t *testing.T) {
		m, c, traffic := setup(t, "")
		traffic.add("green", 1000, 200) // 20% errors: one failed analysis, not failure_limit's 3
		c.analyse(context.Background())
		st, _ := m.Status("web")
		if st.Phase != RolledBack || st.CanaryWeight != 0 || !strings.Contains(st.Reason, "the bake failed, back to blue: error_rate") {
			t.Fatalf("a failing bake: %s at %v%%: %s", st.Phase, st.CanaryWeight, st.Reason)
		}
	})
	t.Run("promote ends it; pause and resume start it over", func(t *testing.T) {
		m, c, _ := setup(t, "")
		c.mu.Lock()
		c.st.BakeUntil = time.Now().Add(time.Minute)
		c.mu.Unlock()
		if st, err := m.Control("web", Pause); err != nil || st.Phase != Paused {
			t.Fatalf("pause: %v %s", err, st.Phase)
		}
		st, err := m.Control("web", Resume)
		if err != nil || st.Phase != Baking || time.Until(st.BakeUntil) < 59*time.Minute {
			t.Fatalf("resume: %v %s until %v", err, st.Phase, st.BakeUntil)
		}
		if st, err := m.Control("web", Promote); err != nil || st.Phase != Promoted || !strings.Contains(st.Reason, "the bake ended early") {
			t.Fatalf("promote: %v %s (%s)", err, st.Phase, st.Reason)
		}
	})
}

// A post_promotion gate runs at the start of the bake; its failure
// reverts at once.
func TestPostPromotionGate(t *testing.T) {
	g := newGateServer(t, 500)
	traffic := newSim()
	m := NewManager(Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
	m.Start()
	defer m.Close()
	m.Sync(webRoutes(t, `{ stable: blue, canary: green, steps: [50, 100], min_requests: 10, interval: 100ms, failure_limit: 5, bake: { duration: 1h },
      gates: [ { name: synthetic, at: post_promotion, url: "`+g.URL+`" } ] }`))
	traffic.add("green", 100, 0)
	traffic.add("blue", 100, 0)
	st := waitStatus(t, m, "web", "rolled back by the post_promotion gate", func(s Status) bool { return s.Phase == RolledBack })
	if !strings.Contains(st.Reason, "a post_promotion gate failed during the bake, back to blue: gate:synthetic") {
		t.Errorf("%s", st.Reason)
	}
	if p := g.points(); len(p) != 1 || p[0] != "synthetic@post_promotion" {
		t.Errorf("gate asked %v", p)
	}
}
