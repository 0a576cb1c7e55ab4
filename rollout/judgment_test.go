package rollout

import (
	"context"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/evidence"
	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

func TestWilson(t *testing.T) {
	for _, tc := range []struct {
		k, n, conf float64
		lo, hi     float64
	}{
		{3, 149, 0.95, 0.0069, 0.0575}, // the "3 of 149"
		{0, 100, 0.95, 0, 0.037},
		{100, 100, 0.95, 0.963, 1},
		{50, 100, 0.95, 0.404, 0.596},
	} {
		lo, hi := wilson(tc.k, tc.n, zFor(tc.conf))
		if math.Abs(lo-tc.lo) > 0.001 || math.Abs(hi-tc.hi) > 0.001 {
			t.Errorf("%v of %v at %v: [%.4f, %.4f], want [%.4f, %.4f]", tc.k, tc.n, tc.conf, lo, hi, tc.lo, tc.hi)
		}
	}
	if z := zFor(0.95); math.Abs(z-1.96) > 0.001 {
		t.Errorf("z(0.95) = %v", z)
	}
}

func TestBoundVerdict(t *testing.T) {
	for _, tc := range []struct {
		k, n, max float64
		want      Result
	}{
		{3, 149, 0.02, Inconclusive}, // 2.01%: noise near the line
		{1, 149, 0.02, Inconclusive}, // 0.7%, but 149 requests cannot say it is under 2%
		{2, 1000, 0.02, Pass},
		{8, 100, 0.02, Fail}, // 8%: above 2% with confidence
		{5, 50, 0.02, Fail},
		{0, 100, 0, Pass}, // a bound of 0: no interval, no error allowed
		{1, 10000, 0, Fail},
	} {
		v := boundVerdict("error_rate", tc.k, tc.n, tc.max, 0.95, "canary errors")
		if v.Result != tc.want {
			t.Errorf("%v of %v against %v: %s, want %s (%s)", tc.k, tc.n, tc.max, v.Result, tc.want, v.Reason)
		}
		if tc.want == Inconclusive && !v.Gathering {
			t.Errorf("%v of %v: inconclusive but not gathering", tc.k, tc.n)
		}
	}
	v := boundVerdict("error_rate", 3, 149, 0.02, 0.95, "canary errors")
	if want := "canary errors: 3 of 149 = 2.01%; 95% interval 0.69%–5.75%, max 2.00%: inconclusive"; !strings.HasPrefix(v.Reason, want) {
		t.Errorf("reason %q, want it to start %q", v.Reason, want)
	}
}

// hist fills a histogram with n requests at each latency.
func hist(at map[time.Duration]uint64) evidence.Counts {
	var c evidence.Counts
	for d, n := range at {
		c.Requests += n
		b := 0
		for i := 0; i < evidence.LatencyBuckets; i++ {
			if lo, hi := evidence.BucketBounds(i); d >= lo && d < hi {
				b = i
			}
		}
		c.Latency[b] += n
	}
	return c
}

// The regression Mann-Whitney promoted: 3% of requests from 40 to 120 ms.
// The tail test fails it; the whole-distribution test alone did not.
func TestCompareTailCatchesATailOnlyRegression(t *testing.T) {
	stable := hist(map[time.Duration]uint64{30 * time.Millisecond: 4900, 40 * time.Millisecond: 4900, 41 * time.Millisecond: 200})
	canary := hist(map[time.Duration]uint64{30 * time.Millisecond: 490, 40 * time.Millisecond: 460, 41 * time.Millisecond: 20, 120 * time.Millisecond: 30})
	if v := compareLatency(&canary, &stable, 0.99, 1.5, 10*time.Millisecond); v.Result != Pass {
		t.Fatalf("whole distribution: %s (%s); the premise is that it misses this", v.Result, v.Reason)
	}
	if v := compareTail(&canary, &stable, 0.99, 1.5, 10*time.Millisecond); v.Result != Fail {
		t.Errorf("tail: %s (%s)", v.Result, v.Reason)
	}
	// The same canary without the slow 3%: passes.
	same := hist(map[time.Duration]uint64{30 * time.Millisecond: 490, 40 * time.Millisecond: 490, 41 * time.Millisecond: 20})
	if v := compareTail(&same, &stable, 0.99, 1.5, 10*time.Millisecond); v.Result != Pass {
		t.Errorf("tail of an equal canary: %s (%s)", v.Result, v.Reason)
	}
	// Slower tail, but by less than the effect bound (+10ms): passes.
	near := hist(map[time.Duration]uint64{30 * time.Millisecond: 490, 40 * time.Millisecond: 460, 41 * time.Millisecond: 20, 45 * time.Millisecond: 30})
	if v := compareTail(&near, &stable, 0.99, 1.5, 10*time.Millisecond); v.Result != Pass {
		t.Errorf("tail slower by less than the effect bound: %s (%s)", v.Result, v.Reason)
	}
}

// webRoutes is route "web" (stable blue at 100, canary green at 0, the
// force header X-Canary-Pool) with the rollout block given.
func webRoutes(t testing.TB, rolloutBlock string) []config.Route {
	t.Helper()
	cfg, err := config.Parse("web.yaml", []byte(`routes:
  - name: web
    force: { header: X-Canary-Pool }
    rollout: `+rolloutBlock+`
    pools:
      - { name: blue, weight: 100, instances: ["127.0.0.1:1"] }
      - { name: green, weight: 0, instances: ["127.0.0.1:2"] }
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Routes
}

// newTestManager is a manager of route "web" on synthetic traffic.
func newTestManager(t testing.TB, traffic *sim, rolloutBlock string) (*Manager, *controller) {
	t.Helper()
	return newTestManagerWith(t, traffic, rolloutBlock, allUp{})
}

// newTestManagerWith is newTestManager with the pools' instances given.
func newTestManagerWith(t testing.TB, traffic *sim, rolloutBlock string, pools Pools) (*Manager, *controller) {
	t.Helper()
	m := NewManager(Deps{Counters: traffic, Pools: pools,
		Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
	m.Sync(webRoutes(t, rolloutBlock))
	return m, m.get("web")
}

// One burst fails one analysis at most: after a failure the evidence
// starts afresh, and the failed analysis is in the history.
func TestEvidenceCountedOnce(t *testing.T) {
	traffic := newSim()
	_, c := newTestManager(t, traffic, `{ stable: blue, canary: green, steps: [10, 100], min_requests: 100, failure_limit: 2,
      analysis: { compare_to_stable: {} }, tripwire: { disabled: true } }`)
	traffic.add("green", 100, 8) // the burst, among 100
	traffic.add("blue", 900, 4)
	c.analyse(context.Background())
	st := c.status()
	if st.Failures != 1 || st.Phase != Progressing {
		t.Fatalf("after the burst: %s with %d failures (%s)", st.Phase, st.Failures, st.Reason)
	}
	last := st.History[len(st.History)-1]
	if last.Kind != KindAnalysis || !strings.Contains(last.Reason, "analysis failed (1 of failure_limit 2)") || len(last.Verdicts) == 0 {
		t.Errorf("the failed analysis is not in the history: %+v", last)
	}
	// Ordinary traffic after it: judged alone, so the burst is not seen
	// twice, and the step passes.
	traffic.add("green", 1000, 5)
	traffic.add("blue", 9000, 45)
	c.analyse(context.Background())
	if st = c.status(); st.Phase != Promoted {
		t.Errorf("after ordinary traffic: %s with %d failures (%s)", st.Phase, st.Failures, st.Reason)
	}
}

// Preview traffic in a canary rollout is shown and decides nothing; in
// blue_green it is the evidence.
func TestPreviewJudgedApart(t *testing.T) {
	traffic := newSim()
	_, c := newTestManager(t, traffic, `{ stable: blue, canary: green, steps: [10, 100], min_requests: 100, failure_limit: 1,
      analysis: { max_error_rate: 0.02 } }`)
	traffic.addPreview("green", 50, 50) // every forced request fails
	traffic.add("green", 1000, 0)
	traffic.add("blue", 9000, 0)
	c.analyse(context.Background())
	st := c.status()
	if st.Phase != Promoted {
		t.Fatalf("forced failures decided a weighted step: %s (%s)", st.Phase, st.Reason)
	}
	var seen bool
	for _, e := range st.History {
		for _, v := range e.Verdicts {
			seen = seen || (v.Check == "preview" && v.Advisory && v.Result == Fail && strings.Contains(v.Reason, "50 forced (preview) requests to the canary, 50 failed"))
		}
	}
	if !seen {
		t.Errorf("no advisory preview verdict: %+v", st.History)
	}
	// The tripwire does not see them either.
	traffic2 := newSim()
	_, c2 := newTestManager(t, traffic2, `{ stable: blue, canary: green, steps: [10, 100], min_requests: 100 }`)
	traffic2.addPreview("green", 100, 100)
	c2.checkTripwire(time.Now().Add(2 * time.Second))
	if st := c2.status(); st.Phase != Progressing {
		t.Errorf("the tripwire fired on preview traffic: %s", st.Reason)
	}

	bg := newSim()
	_, b := newTestManager(t, bg, `{ strategy: blue_green, stable: blue, canary: green, min_requests: 100, failure_limit: 1,
      analysis: { max_error_rate: 0.02 }, tripwire: { disabled: true } }`)
	bg.addPreview("green", 200, 50)
	bg.add("blue", 9000, 0)
	b.analyse(context.Background())
	if st := b.status(); st.Phase != RolledBack || !strings.Contains(st.Reason, "error_rate") {
		t.Errorf("blue_green judges the preview: %s (%s)", st.Phase, st.Reason)
	}
}

// After Stop nothing decides: an analysis or a tripwire is a no-op, and
// the saved state is the one at Stop. Operator commands still act.
func TestStopFreezesDecisions(t *testing.T) {
	traffic := newSim()
	m, c := newTestManager(t, traffic, `{ stable: blue, canary: green, steps: [10, 50, 100], min_requests: 10 }`)
	m.Start()
	m.Stop()
	traffic.add("green", 1000, 0)
	traffic.add("blue", 9000, 0)
	c.analyse(context.Background())
	traffic.add("green", 100, 100)
	c.checkTripwire(time.Now().Add(2 * time.Second))
	if st := c.status(); st.Phase != Progressing || st.Step != 1 {
		t.Fatalf("after Stop: %s at step %d (%s)", st.Phase, st.Step, st.Reason)
	}
	saved, err := load(m.deps.StateDir, "web")
	if err != nil || saved.Phase != Progressing || saved.StepIndex != 0 {
		t.Fatalf("saved at Stop: %+v %v", saved, err)
	}
	// A reload that lands during the drain starts no new release.
	cfg, _ := config.Parse("j.yaml", []byte(`routes:
  - name: web
    rollout: { stable: blue, canary: green, steps: [10, 50, 100], min_requests: 10 }
    pools:
      - { name: blue, weight: 100, instances: ["127.0.0.1:1"] }
      - { name: green, weight: 0, instances: ["127.0.0.1:3"] }
`))
	c.mu.Lock()
	release := c.st.Release
	c.mu.Unlock()
	m.Sync(cfg.Routes)
	c.mu.Lock()
	after := c.st.Release
	c.mu.Unlock()
	if st := c.status(); st.Phase != Progressing || st.Step != 1 || after != release {
		t.Errorf("a reload during the drain moved the rollout: %s, release %s → %s (%s)", st.Phase, release, after, st.Reason)
	}
	if _, err := m.Control("web", "abort"); err != nil {
		t.Fatal(err)
	}
	if saved, _ := load(m.deps.StateDir, "web"); saved.Phase != RolledBack {
		t.Errorf("an abort after Stop was not saved: %s", saved.Phase)
	}
	m.Close()
}

// The tripwire's verdict is the rollback's cause, in status; a one-second
// window (the shortest validate accepts) fires although readings come a
// little over a second apart.
func TestTripwireCauseAndShortWindow(t *testing.T) {
	traffic := newSim()
	_, c := newTestManager(t, traffic, `{ stable: blue, canary: green, steps: [10, 100], min_requests: 1000,
      tripwire: { window: 1s, min_requests: 20 } }`)
	now := time.Now()
	for i := 1; i <= 4; i++ {
		now = now.Add(1001 * time.Millisecond)
		traffic.add("green", 25, 25)
		traffic.add("blue", 225, 0)
		c.checkTripwire(now)
	}
	st := c.status()
	if st.Phase != RolledBack {
		t.Fatalf("a 100%%-failing canary with a 1s window: %s", st.Phase)
	}
	if len(st.LastVerdicts) != 1 || st.LastVerdicts[0].Check != "tripwire" || st.LastVerdicts[0].Result != Fail {
		t.Errorf("last verdicts after a tripwire rollback: %+v", st.LastVerdicts)
	}
}

// Analyses with the same outcome fold into one history event; the
// oldest analyses go first when the history is full.
func TestHistoryFoldsRepeatedAnalyses(t *testing.T) {
	var s State
	s.record(Event{Kind: KindTransition, To: Progressing, Step: 1})
	hold := []Verdict{{Check: "min_requests", Result: Inconclusive, Gathering: true}}
	for i := 0; i < 5; i++ {
		s.record(Event{Kind: KindAnalysis, To: Progressing, Step: 1, Verdicts: hold})
	}
	if len(s.History) != 2 || s.History[1].Repeats != 4 {
		t.Fatalf("five equal holds: %d events, repeats %d", len(s.History), s.History[len(s.History)-1].Repeats)
	}
	s.record(Event{Kind: KindAnalysis, To: Progressing, Step: 1, Verdicts: []Verdict{{Check: "error_rate", Result: Fail}}})
	if len(s.History) != 3 {
		t.Errorf("a different outcome was folded: %d events", len(s.History))
	}
	for i := 0; i < maxHistory; i++ {
		s.record(Event{Kind: KindTransition, To: Progressing, Step: i + 2})
	}
	// 203 events for 200 places: the two analyses went, then the oldest
	// transition.
	if len(s.History) != maxHistory || s.History[0].Step != 2 || s.History[len(s.History)-1].Step != maxHistory+1 {
		t.Errorf("full history: %d events, first %+v", len(s.History), s.History[0])
	}
	for _, e := range s.History {
		if e.Kind == KindAnalysis {
			t.Errorf("an analysis outlived a transition: %+v", e)
		}
	}
}

// The probability that one analysis of max_error_rate 2% fails, computed
// exactly over the binomial distribution of the errors: a true 0.5%
// canary essentially never fails at ~150 requests (it did 4 times in 40
// healthy runs with the plain threshold), and a true 5% one fails at once
// more often than not, and almost surely within a few hundred requests.
func TestBoundFailureProbability(t *testing.T) {
	pFail := func(rate float64, n int) float64 {
		var total float64
		for k := 0; k <= n; k++ {
			if boundVerdict("error_rate", float64(k), float64(n), 0.02, 0.95, "").Result != Fail {
				continue
			}
			lg, _ := math.Lgamma(float64(n + 1))
			lk, _ := math.Lgamma(float64(k + 1))
			lnk, _ := math.Lgamma(float64(n - k + 1))
			total += math.Exp(lg - lk - lnk + float64(k)*math.Log(rate) + float64(n-k)*math.Log(1-rate))
		}
		return total
	}
	for _, tc := range []struct {
		rate     float64
		n        int
		min, max float64
	}{
		{0.005, 150, 0, 0.0005},
		{0.005, 1000, 0, 0.0005},
		{0.01, 150, 0, 0.005},
		{0.05, 150, 0.5, 1},
		{0.05, 400, 0.9, 1},
	} {
		p := pFail(tc.rate, tc.n)
		t.Logf("true %.1f%%, %d requests: P(fail) = %.2g", 100*tc.rate, tc.n, p)
		if p < tc.min || p > tc.max {
			t.Errorf("true %.1f%% at %d requests: P(fail) = %.4g, want in [%g, %g]", 100*tc.rate, tc.n, p, tc.min, tc.max)
		}
	}
	// The plain threshold it replaced ("rate > 2%"), for the record.
	var plain float64
	for k := 3; k <= 149; k++ { // 3 of 149 = 2.01% > 2%
		lg, _ := math.Lgamma(150)
		lk, _ := math.Lgamma(float64(k + 1))
		lnk, _ := math.Lgamma(float64(149 - k + 1))
		plain += math.Exp(lg - lk - lnk + float64(k)*math.Log(0.005) + float64(149-k)*math.Log(0.995))
	}
	t.Logf("the plain threshold at 149 requests of a true 0.5%%: P(fail) = %.3f", plain)
	if plain < 100*pFail(0.005, 149) {
		t.Errorf("the interval bound is not far safer than the plain threshold: %.3g against %.3g", pFail(0.005, 149), plain)
	}
}

// canary_available fails a canary whose every instance is out while the
// stable pool serves; when no instance of either pool is available, the
// problem is health or config (a probe path nobody answers), not the
// canary's: the check is inconclusive and counts no failure.
func TestCanaryAvailableBlamesOnlyTheCanary(t *testing.T) {
	ro := &config.Rollout{}
	for _, tc := range []struct {
		name               string
		canaryUp, canaryOf int
		stableUp, stableOf int
		want               Result
		none               bool // no canary_available verdict at all
	}{
		{"the canary down, stable serving", 0, 1, 2, 2, Fail, false},
		{"both pools down", 0, 1, 0, 2, Inconclusive, false},
		{"the canary up", 1, 1, 0, 2, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs, _ := embeddedChecks(ro, 100, sample{canaryAvailable: tc.canaryUp, canaryTotal: tc.canaryOf, stableAvailable: tc.stableUp, stableTotal: tc.stableOf})
			var got *Verdict
			for i := range vs {
				if vs[i].Check == "canary_available" {
					got = &vs[i]
				}
			}
			switch {
			case tc.none && got != nil:
				t.Fatalf("canary_available %s: %s", got.Result, got.Reason)
			case !tc.none && (got == nil || got.Result != tc.want):
				t.Fatalf("canary_available %+v, want %s", got, tc.want)
			}
		})
	}
}

// Verdicts read as sentences: whole requests (a count read across a
// latency bucket is interpolated, "46.1 of 4614" read as nonsense), no
// test statistic to decode ("Mann-Whitney U=598674").
func TestReasonsReadAsSentences(t *testing.T) {
	stable := hist(map[time.Duration]uint64{30 * time.Millisecond: 4900, 40 * time.Millisecond: 4900, 41 * time.Millisecond: 200})
	canary := hist(map[time.Duration]uint64{30 * time.Millisecond: 490, 40 * time.Millisecond: 460, 41 * time.Millisecond: 20, 120 * time.Millisecond: 30})
	fraction := regexp.MustCompile(`\d\.\d+ of \d`)
	for _, v := range []Verdict{
		compareTail(&canary, &stable, 0.99, 1.5, 10*time.Millisecond),
		compareLatency(&canary, &stable, 0.99, 1.5, 10*time.Millisecond),
	} {
		if fraction.MatchString(v.Reason) || strings.Contains(v.Reason, "U=") || strings.Contains(v.Reason, "Mann-Whitney") {
			t.Errorf("%s: %s", v.Check, v.Reason)
		}
	}
}
