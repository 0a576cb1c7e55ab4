package rollout

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

// An estimate is what it claims: at the rate of bad requests seen so
// far, about More more requests decide the check. The true number is found
// by adding requests until the verdict decides; the estimate is within a
// factor of two of it.
func TestMoreRequestsIsAboutRight(t *testing.T) {
	for _, tc := range []struct {
		rate, max float64
		n         float64
	}{
		{0.03, 0.05, 300},  // below the bound: passes with more
		{0.07, 0.05, 300},  // above: fails with more
		{0.045, 0.05, 500}, // close to it: many more
		{0.008, 0.01, 2000},
	} {
		v := boundVerdict("error_rate", tc.rate*tc.n, tc.n, tc.max, 0.95, "x")
		if !v.Gathering || v.More <= 0 {
			t.Fatalf("%+v: not gathering with an estimate: %+v", tc, v)
		}
		truth := 0.0
		for m := tc.n; m < 1e8; m *= 1.02 {
			if w := boundVerdict("error_rate", tc.rate*m, m, tc.max, 0.95, "x"); !w.Gathering {
				truth = m - tc.n
				break
			}
		}
		if r := v.More / truth; r < 0.5 || r > 2 {
			t.Errorf("%+v: estimated %.0f more, took %.0f", tc, v.More, truth)
		}
	}
	// The comparisons: P(worse) between passBelow and the confidence.
	for _, tc := range []struct{ ec, nc, es, ns float64 }{
		{10, 1000, 50, 10000}, // leans better than ratio × stable + the floor
		{14, 1000, 50, 10000}, // leans worse
	} {
		v := compareErrors(uint64(tc.ec), uint64(tc.nc), uint64(tc.es), uint64(tc.ns), 0.99, 1.5, 0.005)
		if !v.Gathering {
			t.Fatalf("%+v: %s", tc, v.Reason)
		}
		truth := 0.0
		for k := 1.0; k < 1e4; k *= 1.02 {
			w := compareErrors(uint64(math.Round(tc.ec*k)), uint64(math.Round(tc.nc*k)), uint64(math.Round(tc.es*k)), uint64(math.Round(tc.ns*k)), 0.99, 1.5, 0.005)
			if !w.Gathering {
				truth = tc.nc*k - tc.nc
				break
			}
		}
		if v.More <= 0 || v.More/truth < 0.5 || v.More/truth > 2 {
			t.Errorf("%+v: estimated %.0f more, took %.0f", tc, v.More, truth)
		}
	}
}

func TestEstimate(t *testing.T) {
	vs := []Verdict{
		{Check: "min_requests", Result: Pass, Value: 600},
		{Check: "error_rate", Result: Inconclusive, Gathering: true, More: 1200},
		{Check: "compare_errors", Result: Inconclusive, Gathering: true, More: 240},
		{Check: "preview", Advisory: true, Gathering: true, More: 1e6},
	}
	// 600 requests in 60s: 10/s; 1200 more take 120s, the analysis after
	// that at a 30s interval is at 120s.
	e := estimate(vs, time.Minute, 30*time.Second)
	if e == nil || e.Requests != 1200 || e.Seconds != 120 || e.Text != "about 1200 more canary requests, ~2m" {
		t.Errorf("%+v", e)
	}
	if e := estimate(vs[:1], time.Minute, 30*time.Second); e != nil {
		t.Errorf("nothing gathering: %+v", e)
	}
}

// A step that holds to gather shows its estimate in status; one that moves
// on does not.
func TestHoldingStepShowsEstimate(t *testing.T) {
	traffic := newSim()
	m := NewManager(Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
	m.Sync(webRoutes(t, `{ stable: blue, canary: green, steps: [10, 100], min_requests: 100, interval: 10s, analysis: { max_error_rate: 0.05 } }`))
	c := m.get("web")
	c.mu.Lock()
	c.st.EvidenceSince = time.Now().Add(-30 * time.Second)
	c.mu.Unlock()
	traffic.add("green", 300, 12) // 4% against 5%: holds
	traffic.add("blue", 2700, 0)
	c.analyse(context.Background())
	st, _ := m.Status("web")
	if st.Estimate == nil || st.Estimate.Requests < 100 || !strings.HasPrefix(st.Estimate.Text, "about ") || !strings.Contains(st.Estimate.Text, "more canary requests, ~") {
		t.Fatalf("holding: %+v (%s)", st.Estimate, st.Reason)
	}
	traffic.add("green", 100000, 1000)
	traffic.add("blue", 100000, 0)
	c.analyse(context.Background())
	if st, _ := m.Status("web"); st.Phase != Promoted || st.Estimate != nil {
		t.Errorf("decided: %s, estimate %+v", st.Phase, st.Estimate)
	}
}
