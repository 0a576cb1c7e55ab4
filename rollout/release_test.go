package rollout

import (
	"strings"
	"testing"

	"canaryd/config"
	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

// held is what two dynamic pools hold, as the pipeline would report it.
type held map[string]PoolRelease

func (h held) rel(_ *config.Route, pool string) PoolRelease { return h[pool] }

func version(v string, n int) PoolRelease {
	if n == 0 {
		return PoolRelease{}
	}
	return PoolRelease{ID: "v:" + v, Version: v, Instances: n}
}

// The flow the product exists for, through the same two pools: v1 in
// blue, v2 arrives in green and is rolled out and promoted; v1's group
// leaves; v3 arrives in blue, which is now the canary (the roles swap);
// promoted; v4 in green. Instance churn within a version keeps the step;
// a canary pool with no instances waits, idle, with blue serving all.
func TestReleasesRepeatThroughTwoPools(t *testing.T) {
	traffic := newSim()
	deps := Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()}
	m := NewManager(deps)
	routes := registeredWeb(t, "{ stable: blue, canary: green, steps: [10, 50, 100], min_requests: 10 }")
	r := &routes[0]
	pools := held{"blue": version("v1", 2)}
	expect := func(phase Phase, stable, canary string, canaryBP int, reason string) {
		t.Helper()
		st, _ := m.Status("web")
		o := overridesOf(m)["web"]
		if st.Phase != phase || st.Stable != stable || st.Canary != canary || o.CanaryBP != canaryBP || o.Canary != canary || !strings.Contains(st.Reason, reason) {
			t.Fatalf("%s, stable %s, canary %s at %d bp (%s); want %s, %s, %s at %d bp, saying %q",
				st.Phase, st.Stable, st.Canary, o.CanaryBP, st.Reason, phase, stable, canary, canaryBP, reason)
		}
	}
	refresh := func() { m.Refresh(r, pools.rel) }
	promote := func(canary string) {
		t.Helper()
		for i := 0; i < 3; i++ {
			traffic.add(canary, 1000, 0)
			traffic.add(map[string]string{"blue": "green", "green": "blue"}[canary], 9000, 0)
			m.get("web").analyse(t.Context())
		}
	}

	m.SyncReleases(routes, pools.rel)
	expect(Idle, "blue", "green", 0, "the canary pool green has no instances yet")

	pools["green"] = version("v2", 1)
	refresh()
	expect(Progressing, "blue", "green", 1000, "new release v2 of pool green")
	if st, _ := m.Status("web"); st.StableVersion != "v1" || st.CanaryVersion != "v2" {
		t.Fatalf("versions: stable %q canary %q", st.StableVersion, st.CanaryVersion)
	}
	// Scale-out, a replaced instance, scale-in: the same version, the
	// same step.
	for _, n := range []int{3, 3, 2} {
		pools["green"] = version("v2", n)
		refresh()
		expect(Progressing, "blue", "green", 1000, "new release v2")
	}
	promote("green")
	expect(Promoted, "blue", "green", 10000, "")

	// v1's group scales to zero: no release, green keeps everything.
	pools["blue"] = version("", 0)
	refresh()
	expect(Promoted, "blue", "green", 10000, "")

	// A restart here resumes the promotion, roles and all.
	m2 := NewManager(deps)
	m2.SyncReleases(routes, pools.rel)
	if st, _ := m2.Status("web"); st.Phase != Promoted || st.Canary != "green" {
		t.Fatalf("after restart: %+v", st)
	}

	// v3 arrives in blue, the pool at 0%: the roles swap.
	pools["blue"] = version("v3", 2)
	refresh()
	expect(Progressing, "green", "blue", 1000, "the pools swap roles, green (promoted) is the stable one now and blue the canary")
	promote("blue")
	expect(Promoted, "green", "blue", 10000, "")

	// v4 replaces v2 in green in one step (no empty pool in between).
	pools["green"] = version("v4", 2)
	refresh()
	expect(Progressing, "blue", "green", 1000, "new release v4 of pool green")

	// The canary's group leaves in the middle of its rollout: no new
	// release, no restart of the steps.
	pools["green"] = version("", 0)
	refresh()
	expect(Progressing, "blue", "green", 1000, "new release v4")
	pools["green"] = version("v4", 1)
	refresh()
	expect(Progressing, "blue", "green", 1000, "new release v4")

	// Aborted, then the canary's group leaves: the rollout waits for the
	// next release.
	if _, err := m.Control("web", Abort); err != nil {
		t.Fatal(err)
	}
	pools["green"] = version("", 0)
	refresh()
	expect(Idle, "blue", "green", 0, "the canary pool green has no instances yet")
}

// Dynamic pools without versions: one release for as long as the canary
// has instances; after a promotion, the other pool filling up again is
// the next release.
func TestReleasesWithoutVersions(t *testing.T) {
	traffic := newSim()
	m := NewManager(Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
	routes := registeredWeb(t, "{ stable: blue, canary: green, steps: [50, 100], min_requests: 10 }")
	r := &routes[0]
	some := PoolRelease{ID: "dynamic", Instances: 2}
	pools := held{"blue": some, "green": some}
	m.SyncReleases(routes, pools.rel)
	for i := 0; i < 2; i++ {
		traffic.add("green", 1000, 0)
		traffic.add("blue", 1000, 0)
		m.get("web").analyse(t.Context())
	}
	if st, _ := m.Status("web"); st.Phase != Promoted {
		t.Fatalf("%+v", st)
	}
	pools["blue"] = PoolRelease{ID: "dynamic", Instances: 5} // churn of the old group
	m.Refresh(r, pools.rel)
	if st, _ := m.Status("web"); st.Phase != Promoted {
		t.Fatalf("churn in the old group started a release: %+v", st)
	}
	pools["blue"] = PoolRelease{}
	m.Refresh(r, pools.rel)
	pools["blue"] = some
	m.Refresh(r, pools.rel)
	if st, _ := m.Status("web"); st.Phase != Progressing || st.Canary != "blue" || st.Stable != "green" {
		t.Fatalf("the old pool filled up again: %+v", st)
	}
}

// State files written before roles could swap resume without a swap.
func TestOldStateFilesResume(t *testing.T) {
	dir := t.TempDir()
	traffic := newSim()
	deps := Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: dir}
	cfg, _ := config.Parse("r.yaml", []byte(`routes:
  - name: web
    rollout: { stable: blue, canary: green, steps: [100], min_requests: 10 }
    pools:
      - { name: blue, weight: 100, instances: ["127.0.0.1:1"] }
      - { name: green, weight: 0, instances: ["127.0.0.1:2"] }
`))
	st := &State{Route: "web", Release: Release(&cfg.Routes[0]), Strategy: "canary", Stable: "blue", Canary: "green", Phase: Promoted, StepIndex: 0, Weight: 10000}
	if err := (Files{Dir: dir}).Save(st); err != nil {
		t.Fatal(err)
	}
	m := NewManager(deps)
	m.Sync(cfg.Routes)
	if s, _ := m.Status("web"); s.Phase != Promoted || s.Canary != "green" {
		t.Fatalf("%+v", s)
	}
}

// registeredWeb is a route "web" whose pools blue and green take their
// instances from registrations, with the rollout block given.
func registeredWeb(t *testing.T, rolloutBlock string) []config.Route {
	t.Helper()
	cfg, err := config.Parse("r.yaml", []byte(`routes:
  - name: web
    rollout: `+rolloutBlock+`
    pools:
      - { name: blue, weight: 100, registered: true }
      - { name: green, weight: 0, registered: true }
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Routes
}
