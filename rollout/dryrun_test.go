package rollout

import (
	"context"
	"strings"
	"testing"

	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

// A dry-run check that fails is recorded and counted, and decides
// nothing: the release moves on; without dry_run the same check rolls it
// back.
func TestDryRunCheckDecidesNothing(t *testing.T) {
	for _, tc := range []struct {
		dry  string
		want Phase
	}{
		{"dry_run: [error_rate]", Progressing},
		{"dry_run: []", RolledBack},
	} {
		traffic := newSim()
		reg := prometheus.NewRegistry()
		m := NewManager(Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(reg), StateDir: t.TempDir()})
		m.Sync(webRoutes(t, `{ stable: blue, canary: green, steps: [10, 50, 100], min_requests: 100, failure_limit: 1,
      analysis: { max_error_rate: 0.01, `+tc.dry+` } }`))
		traffic.add("green", 1000, 100) // 10% errors against a 1% bound
		traffic.add("blue", 9000, 0)
		m.get("web").analyse(context.Background())
		st, _ := m.Status("web")
		if st.Phase != tc.want {
			t.Fatalf("%s: %s (%s); want %s", tc.dry, st.Phase, st.Reason, tc.want)
		}
		if tc.want != Progressing {
			continue
		}
		var v *Verdict
		for i := range st.History[len(st.History)-1].Verdicts {
			if x := &st.History[len(st.History)-1].Verdicts[i]; x.Check == "error_rate" {
				v = x
			}
		}
		if st.CanaryWeight != 50 || v == nil || v.Result != Fail || !v.DryRun || !strings.HasPrefix(v.Reason, "dry run, decides nothing") {
			t.Errorf("at %v%% with error_rate verdict %+v", st.CanaryWeight, v)
		}
		if n := counterValue(t, reg, "canaryd_rollout_verdicts_total", map[string]string{"check": "error_rate", "result": "fail"}); n != 1 {
			t.Errorf("the dry run's failure counted %v times", n)
		}
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, mm := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range mm.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			for k, v := range labels {
				if l[k] != v {
					continue next
				}
			}
			return mm.GetCounter().GetValue()
		}
	}
	return 0
}
