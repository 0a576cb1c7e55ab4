package rollout

import (
	"strings"
	"testing"

	"canaryd/config"
	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

func versioned(t *testing.T, extra, blue, green string) []config.Route {
	t.Helper()
	cfg, err := config.Parse("v.yaml", []byte(`routes:
  - name: web
    rollout: { stable: blue, canary: green, steps: [10, 50, 100] `+extra+` }
    pools:
      - { name: blue, weight: 100, version: `+blue+`, instances: ["127.0.0.1:1"] }
      - { name: green, weight: 0, version: `+green+`, instances: ["127.0.0.1:2"] }
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Routes
}

// A release that was stable within fast_revert, deployed again, goes
// straight to 100% and bakes (the tripwire on); without fast_revert, or
// past its window, it starts at step 1.
func TestFastRevert(t *testing.T) {
	for _, tc := range []struct {
		extra string
		fast  bool
	}{
		{", fast_revert: 24h", true},
		{", fast_revert: 24h, bake: { duration: 10m }", true},
		{"", false},
	} {
		m := NewManager(Deps{Counters: newSim(), Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
		m.Sync(versioned(t, tc.extra, "v1", "v2"))
		if st, err := m.Control("web", Promote); err != nil || (st.Phase != Promoted && st.Phase != Baking) {
			t.Fatalf("promote v2: %v %s", err, st.Phase)
		}
		if st, _ := m.Status("web"); st.Phase == Baking {
			m.Control("web", Promote) // end the bake
		}
		// v3 in the pool at 0%: the roles swap, v3 is the canary; it is
		// aborted; v1, stable until v2's promotion, is deployed again.
		m.Sync(versioned(t, tc.extra, "v3", "v2"))
		if st, _ := m.Status("web"); st.Canary != "blue" || st.CanaryVersion != "v3" || st.Step != 1 {
			t.Fatalf("v3: canary %s %s at step %d", st.Canary, st.CanaryVersion, st.Step)
		}
		m.Control("web", Abort)
		m.Sync(versioned(t, tc.extra, "v1", "v2"))
		st, _ := m.Status("web")
		if !tc.fast {
			if st.Phase != Progressing || st.Step != 1 || st.CanaryWeight != 10 {
				t.Errorf("%q: v1 again without fast_revert: %s at %v%%", tc.extra, st.Phase, st.CanaryWeight)
			}
			continue
		}
		if st.Phase != Baking || st.CanaryWeight != 100 || st.CanaryVersion != "v1" || !strings.Contains(st.Reason, "fast revert: v1 of pool blue (1 instances) was the stable release until") {
			t.Errorf("%q: v1 again: %s at %v%%: %s", tc.extra, st.Phase, st.CanaryWeight, st.Reason)
		}
		if o := overridesOf(m)["web"]; o.CanaryBP != 10000 || !o.UnderWay {
			t.Errorf("%q: override %+v; want 100%% with the tripwire on (under way)", tc.extra, o)
		}
	}
}
