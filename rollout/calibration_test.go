package rollout

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"canaryd/evidence"
)

// The calibration of the judge, as tests: seeded simulated rollouts run
// through the real controller (judge, decide, tripwire), with traffic
// drawn from known distributions. docs/rollouts.md quotes what they
// measure; `go test ./rollout -run Calibration -v` prints it.

// binom draws from Binomial(n, p): by inversion while n·p is small (exact),
// by a normal approximation when it is large (the simulation's counts are
// in the thousands there; the approximation's error is far below the
// effects measured).
func binom(r *rand.Rand, n uint64, p float64) uint64 {
	switch {
	case n == 0 || p <= 0:
		return 0
	case p >= 1:
		return n
	case p > 0.5:
		return n - binom(r, n, 1-p)
	}
	mean := float64(n) * p
	if mean < 30 {
		// Inversion on the pmf, from 0 up.
		q := 1 - p
		pk := math.Pow(q, float64(n))
		u := r.Float64()
		var k uint64
		for u > pk && k < n {
			u -= pk
			pk *= float64(n-k) / float64(k+1) * p / q
			k++
		}
		return k
	}
	x := math.Round(mean + math.Sqrt(mean*(1-p))*r.NormFloat64())
	return uint64(math.Max(0, math.Min(float64(n), x)))
}

// latencyModel is a log-normal latency (median, sigma) of which a share
// is slowFactor times slower: the shape of a tail-only regression.
type latencyModel struct {
	median     time.Duration
	sigma      float64
	slowShare  float64
	slowFactor float64
}

// probs is the model's probability of each in-process latency bucket.
func (m latencyModel) probs() []float64 {
	cdf := func(d time.Duration, scale float64) float64 {
		if d <= 0 {
			return 0
		}
		return normalCDF((math.Log(float64(d)) - math.Log(scale*float64(m.median))) / m.sigma)
	}
	mix := func(d time.Duration) float64 {
		return (1-m.slowShare)*cdf(d, 1) + m.slowShare*cdf(d, m.slowFactor)
	}
	p := make([]float64, evidence.LatencyBuckets)
	for i := range p {
		lo, hi := evidence.BucketBounds(i)
		if i == evidence.LatencyBuckets-1 {
			p[i] = 1 - mix(lo)
			continue
		}
		p[i] = mix(hi) - mix(lo)
	}
	return p
}

// draw adds n requests to c's latency histogram: a multinomial draw as a
// chain of binomials, bucket by bucket.
func draw(r *rand.Rand, c *evidence.Counts, n uint64, probs []float64) {
	rest := 1.0
	for i, p := range probs {
		if n == 0 {
			return
		}
		if p <= 0 {
			continue
		}
		k := n
		if rest > p {
			k = binom(r, n, p/rest)
		}
		c.Latency[i] += k
		n -= k
		rest -= p
	}
	c.Latency[len(c.Latency)-1] += n
}

// poolModel is one pool's behaviour: its error rate and latency.
type poolModel struct {
	errRate float64
	latency []float64
}

// scenario is a whole simulated rollout's setting.
type scenario struct {
	rollout     string // the rollout block, a flow mapping
	perInterval uint64 // requests per analysis interval, all pools
	interval    time.Duration
	stable      poolModel
	canary      poolModel
	// crafted: at this interval, this many extra requests an attacker
	// aims at a path that fails only on the canary. How they reach it is
	// how: by weight (plain requests, split like all traffic), by the force
	// header (a preview), or all on the canary by weight (a sticky key
	// found to land there).
	craftedAt, crafted int
	how                string
}

// shippedRollout is config.yaml's rollout block, and the defaults it
// leaves (max_inconclusive 10, max_gathering 200, tripwire 10s / 20 / 50%,
// confidence 0.95).
const shippedRollout = `{ stable: blue, canary: green, steps: [5, 25, 50, 100], min_requests: 100, failure_limit: 2,
      analysis: { max_error_rate: 0.02, max_latency_p99: 500ms, compare_to_stable: { confidence: 0.99, max_ratio: 1.5 } } }`

// compareOnly judges with compare_to_stable alone, at its defaults.
const compareOnly = `{ stable: blue, canary: green, steps: [5, 25, 50, 100], min_requests: 100, failure_limit: 2,
      analysis: { compare_to_stable: {} } }`

type outcome struct {
	phase        Phase
	reason       string
	analyses     int
	canaryServed uint64
	// failedBefore: failed analyses at the step, on evidence without the
	// crafted burst, when the burst came.
	failedBefore int
	// judged and failed count, by check, the analyses that judged it and
	// the ones it failed.
	judged, failed map[string]int
}

// simulate runs one rollout to its end (or 400 intervals) through the
// real controller: each interval adds one interval's traffic, split by the
// step's weight, runs the tripwire on a clock that advances by the
// interval, and judges.
func simulate(t testing.TB, seed uint64, sc scenario) outcome {
	r := rand.New(rand.NewPCG(seed, 42))
	traffic := newSim()
	_, c := newTestManager(t, traffic, sc.rollout)
	now := time.Now()
	var out outcome
	add := func(c *evidence.Counts, n uint64, pm poolModel) {
		c.Requests += n
		c.Errors += binom(r, n, pm.errRate)
		draw(r, c, n, pm.latency)
	}
	for interval := 0; interval < 400; interval++ {
		c.mu.Lock()
		phase, w, reason := c.st.Phase, c.st.Weight, c.st.Reason
		c.mu.Unlock()
		if phase != Progressing {
			out.phase, out.reason = phase, reason
			return out
		}
		nc := binom(r, sc.perInterval, float64(w)/10000)
		traffic.mu.Lock()
		add(&traffic.pool("green").Weighted, nc, sc.canary)
		add(&traffic.pool("blue").Weighted, sc.perInterval-nc, sc.stable)
		if interval == sc.craftedAt && sc.crafted > 0 {
			c.mu.Lock()
			out.failedBefore = c.st.Failures
			c.mu.Unlock()
			k := uint64(sc.crafted)
			target := &traffic.pool("green").Weighted
			switch sc.how {
			case "forced":
				target = &traffic.pool("green").Preview
			case "plain":
				onCanary := binom(r, k, float64(w)/10000)
				add(&traffic.pool("blue").Weighted, k-onCanary, sc.stable)
				k = onCanary
			}
			target.Requests += k
			target.Errors += k
			draw(r, target, k, sc.canary.latency)
		}
		traffic.mu.Unlock()
		out.canaryServed += nc
		// The tripwire reads the counters once a second; the interval's
		// traffic is spread over the readings.
		now = now.Add(sc.interval)
		c.checkTripwire(now)
		if c.judge(context.Background()) != unchanged {
			c.mu.Lock()
			for _, v := range c.st.LastVerdicts {
				if v.Result == Inconclusive || v.Advisory {
					continue
				}
				if out.judged == nil {
					out.judged, out.failed = map[string]int{}, map[string]int{}
				}
				out.judged[v.Check]++
				if v.Result == Fail {
					out.failed[v.Check]++
				}
			}
			c.mu.Unlock()
		}
		out.analyses++
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out.phase, out.reason = c.st.Phase, c.st.Reason
	return out
}

// runs simulates n seeded rollouts of a scenario and tallies their ends.
func runs(t testing.TB, n int, seed0 uint64, sc scenario) (map[Phase]int, []outcome) {
	got := map[Phase]int{}
	var all []outcome
	for seed := seed0; seed < seed0+uint64(n); seed++ {
		o := simulate(t, seed, sc)
		got[o.phase]++
		all = append(all, o)
	}
	return got, all
}

func reasonsOf(all []outcome, phase Phase, max int) string {
	var rs []string
	for _, o := range all {
		if o.phase == phase && len(rs) < max {
			rs = append(rs, o.reason)
		}
	}
	return strings.Join(rs, "\n  ")
}

var (
	base = latencyModel{median: 40 * time.Millisecond, sigma: 0.3}
	// tailOnly: 3% of the canary's requests three times slower, the rest
	// as stable: p50 unchanged, p99 ×2.9 (the regression Mann-Whitney
	// alone promoted).
	tailOnly = latencyModel{median: 40 * time.Millisecond, sigma: 0.3, slowShare: 0.03, slowFactor: 3}
)

// trafficLevels are requests per interval: with a 2s interval, 250, 1,000
// and 5,000 requests a second (at the first step, 5%, the canary's share
// of the lowest is 25 requests an interval). Below that, decisions near a
// line take longer than max_gathering allows, and such rollouts pause
// (docs/rollouts.md).
var trafficLevels = []uint64{500, 2000, 10000}

func healthy(errRate float64) poolModel {
	return poolModel{errRate: errRate, latency: base.probs()}
}

// Over 1,200 healthy rollouts (canary exactly as good as stable) at three
// traffic levels, false rollbacks stay at or under 0.5%, with the shipped
// config's checks and with compare_to_stable alone.
func TestCalibrationHealthyRollouts(t *testing.T) {
	if testing.Short() {
		t.Skip("calibration: 2,400 simulated rollouts")
	}
	for _, cfg := range []struct{ name, rollout string }{{"shipped", shippedRollout}, {"compare only", compareOnly}} {
		total, rolledBack := 0, 0
		judged, failed := map[string]int{}, map[string]int{}
		for i, level := range trafficLevels {
			sc := scenario{rollout: cfg.rollout, perInterval: level, interval: 2 * time.Second,
				stable: healthy(0.005), canary: healthy(0.005)}
			got, all := runs(t, 400, uint64(1000*i+1), sc)
			total += 400
			for _, o := range all {
				for k, n := range o.judged {
					judged[k] += n
					failed[k] += o.failed[k]
				}
			}
			rolledBack += got[RolledBack]
			t.Logf("%s, %d requests per interval: %v; rolled back:\n  %s", cfg.name, level, got, reasonsOf(all, RolledBack, 3))
			if got[Paused] > 4 {
				t.Errorf("%s, %d per interval: %d of 400 healthy rollouts paused:\n  %s", cfg.name, level, got[Paused], reasonsOf(all, Paused, 3))
			}
		}
		rate := float64(rolledBack) / float64(total)
		t.Logf("%s: %d false rollbacks in %d healthy rollouts (%.2f%%)", cfg.name, rolledBack, total, 100*rate)
		// Each check's false alarms, per analysis that it decided (pass or
		// fail): what one look costs in trust.
		var checks []string
		for k := range judged {
			checks = append(checks, k)
		}
		sort.Strings(checks)
		for _, k := range checks {
			r := float64(failed[k]) / float64(judged[k])
			t.Logf("%s: %s failed %d of %d decided analyses (%.3f%%)", cfg.name, k, failed[k], judged[k], 100*r)
			if r > 0.005 {
				t.Errorf("%s: %s false-alarm rate %.3f%% per analysis, want at most 0.5%%", cfg.name, k, 100*r)
			}
		}
		if rate > 0.005 {
			t.Errorf("%s: %d of %d healthy rollouts rolled back (%.2f%%), want at most 0.5%%", cfg.name, rolledBack, total, 100*rate)
		}
	}
}

// A canary three times worse (3% errors against 1%) is rolled back in at
// least 99% of rollouts; a p99-only regression (3% of requests 3× slower)
// in at least 95%.
func TestCalibrationBadCanariesCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("calibration: simulated rollouts")
	}
	for _, tc := range []struct {
		name    string
		rollout string
		stable  poolModel
		canary  poolModel
		want    float64
	}{
		{"3× errors, shipped", shippedRollout, healthy(0.01), healthy(0.03), 0.99},
		{"3× errors, compare only", compareOnly, healthy(0.01), healthy(0.03), 0.99},
		{"p99-only ×3, shipped", shippedRollout, healthy(0.005), poolModel{errRate: 0.005, latency: tailOnly.probs()}, 0.95},
		{"p99-only ×3, compare only", compareOnly, healthy(0.005), poolModel{errRate: 0.005, latency: tailOnly.probs()}, 0.95},
	} {
		caught, total := 0, 0
		var exposure []uint64
		for i, level := range trafficLevels {
			sc := scenario{rollout: tc.rollout, perInterval: level, interval: 2 * time.Second, stable: tc.stable, canary: tc.canary}
			got, all := runs(t, 200, uint64(5000+1000*i), sc)
			total += 200
			caught += got[RolledBack]
			for _, o := range all {
				exposure = append(exposure, o.canaryServed)
			}
			t.Logf("%s, %d requests per interval: %v; not caught:\n  %s", tc.name, level, got, reasonsOf(all, Promoted, 2)+reasonsOf(all, Paused, 2))
		}
		sort.Slice(exposure, func(i, j int) bool { return exposure[i] < exposure[j] })
		rate := float64(caught) / float64(total)
		t.Logf("%s: caught %d of %d (%.1f%%); canary requests served before the end: median %d, p90 %d",
			tc.name, caught, total, 100*rate, exposure[len(exposure)/2], exposure[len(exposure)*9/10])
		if rate < tc.want {
			t.Errorf("%s: caught %.1f%%, want at least %.0f%%", tc.name, 100*rate, 100*tc.want)
		}
	}
}

// Thirty crafted requests that fail only on the canary, amid normal
// traffic, never roll back a good canary: sent plain (they land by
// weight), forcing the canary by header (preview traffic, judged apart),
// or all landing on the canary by weight (a sticky key found to land
// there) once the release is a tripwire window old. (In a release's first
// window the tripwire judges the time since it began, and a burst larger
// than the canary's own traffic there does fire it: docs/rollouts.md.)
func TestCalibrationCraftedFailuresNeverRollBack(t *testing.T) {
	runsPer := 100
	if testing.Short() {
		runsPer = 10
	}
	total, unlucky := 0, 0
	for _, v := range []struct {
		how string
		at  []int
	}{{"plain", []int{0, 3, 10, 20}}, {"forced", []int{0, 3, 10, 20}}, {"sticky", []int{6, 10, 20}}} {
		for _, at := range v.at {
			for _, level := range trafficLevels {
				for _, cfg := range []struct{ name, rollout string }{{"shipped", shippedRollout}, {"compare only", compareOnly}} {
					sc := scenario{rollout: cfg.rollout, perInterval: level, interval: 2 * time.Second,
						stable: healthy(0.005), canary: healthy(0.005), craftedAt: at, crafted: 30, how: v.how}
					_, all := runs(t, runsPer, uint64(9000+at*100+int(level)), sc)
					name := fmt.Sprintf("%s, 30 crafted (%s) at interval %d, %d per interval", cfg.name, v.how, at, level)
					for _, o := range all {
						total++
						if o.phase != RolledBack {
							continue
						}
						// The burst fails one analysis at most; a rollback needs
						// failure_limit (2). One that had a false alarm on
						// healthy evidence at the same step before the burst is
						// the healthy false-alarm rate, budgeted below.
						if o.failedBefore == 0 {
							t.Errorf("%s: rolled back by the burst: %s", name, o.reason)
						} else {
							unlucky++
							t.Logf("%s: a false alarm before the burst, then the burst: %s", name, o.reason)
						}
					}
				}
			}
		}
	}
	t.Logf("%d rollouts with a crafted burst; %d rolled back, each after a false alarm on healthy evidence before the burst", total, unlucky)
	if float64(unlucky) > 0.005*float64(total) {
		t.Errorf("%d of %d rollouts with a burst rolled back, want at most 0.5%%", unlucky, total)
	}
}
