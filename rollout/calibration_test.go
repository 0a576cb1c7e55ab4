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

// probs is the model's probability of each in-process latency bucket: a
// mixture of the model and its slow share.
func (m latencyModel) probs() []float64 {
	slow := time.Duration(m.slowFactor * float64(m.median))
	return mixtureProbs(component{1 - m.slowShare, m.median, m.sigma}, component{m.slowShare, slow, m.sigma})
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

// poolModel is one pool's behaviour: its error rate and latency; at, when
// set, is its latency at the canary's weight w (0..1), for servers whose
// latency follows their load.
type poolModel struct {
	errRate float64
	latency []float64
	at      func(w float64) []float64
}

// component is one mode of a latency mixture: a share of the requests,
// log-normal around median.
type component struct {
	share  float64
	median time.Duration
	sigma  float64
}

// mixtureProbs is a log-normal mixture's probability of each in-process
// latency bucket: bimodal (cache hit or miss), heavy-tailed, with pauses.
func mixtureProbs(parts ...component) []float64 {
	cdf := func(d time.Duration) float64 {
		if d <= 0 {
			return 0
		}
		var sum float64
		for _, p := range parts {
			sum += p.share * normalCDF((math.Log(float64(d))-math.Log(float64(p.median)))/p.sigma)
		}
		return sum
	}
	p := make([]float64, evidence.LatencyBuckets)
	for i := range p {
		lo, hi := evidence.BucketBounds(i)
		if i == evidence.LatencyBuckets-1 {
			p[i] = 1 - cdf(lo)
			continue
		}
		p[i] = cdf(hi) - cdf(lo)
	}
	return p
}

// scenario is a whole simulated rollout's setting.
type scenario struct {
	rollout     string // the rollout block, a flow mapping
	perInterval uint64 // requests per analysis interval, all pools
	interval    time.Duration
	stable      poolModel
	canary      poolModel
	// pools reports the pools' instances (default: one each, all up).
	pools Pools
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
	var pools Pools = allUp{}
	if sc.pools != nil {
		pools = sc.pools
	}
	_, c := newTestManagerWith(t, traffic, sc.rollout, pools)
	now := time.Now()
	var out outcome
	weight := 0.0
	add := func(c *evidence.Counts, n uint64, pm poolModel) {
		c.Requests += n
		c.Errors += binom(r, n, pm.errRate)
		if pm.at != nil {
			draw(r, c, n, pm.at(weight))
			return
		}
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
		weight = float64(w) / 10000
		nc := binom(r, sc.perInterval, weight)
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

// instances reports a route's pools as blue with two instances and green
// with one, all up: the seed's shape (two of v1, one of v2).
type instances struct{}

func (instances) PoolSummary(_, pool string) (int, int, int) {
	if pool == "blue" {
		return 2, 2, 0
	}
	return 1, 1, 0
}

// realShapes are latencies of servers nobody here wrote, the same for the
// stable and the canary pool (an identical build): bimodal (cache hits
// and misses), heavy-tailed, with GC-like pauses, and single-threaded
// servers that queue, two stable instances and one canary, whose latency
// follows the load each instance carries at the step.
func realShapes() []struct {
	name           string
	stable, canary poolModel
} {
	bimodal := mixtureProbs(component{0.8, 3 * time.Millisecond, 0.25}, component{0.2, 40 * time.Millisecond, 0.3})
	heavy := mixtureProbs(component{1, 8 * time.Millisecond, 1.0})
	pauses := mixtureProbs(component{0.98, 10 * time.Millisecond, 0.3}, component{0.02, 120 * time.Millisecond, 0.4})
	// Utilization of one instance is u × its share of the route's
	// requests per instance (u: 0.5 for a stable pool of two alone);
	// latency is a log-normal around the service time / (1 − ρ).
	queue := func(rho float64) []float64 {
		rho = math.Min(rho, 0.9)
		return mixtureProbs(component{1, time.Duration(float64(4*time.Millisecond) / (1 - rho)), 0.6})
	}
	const u = 0.5
	stableQ := poolModel{errRate: 0.005, at: func(w float64) []float64 { return queue(u * (1 - w)) }}
	canaryQ := poolModel{errRate: 0.005, at: func(w float64) []float64 { return queue(2 * u * w) }}
	same := func(p []float64) poolModel { return poolModel{errRate: 0.005, latency: p} }
	return []struct {
		name           string
		stable, canary poolModel
	}{
		{"bimodal", same(bimodal), same(bimodal)},
		{"heavy-tailed", same(heavy), same(heavy)},
		{"GC-like pauses", same(pauses), same(pauses)},
		{"single-threaded, 2 stable vs 1 canary", stableQ, canaryQ},
	}
}

// An identical build on real-shaped latency is not rolled back: at most 1
// false rollback in 1,000 seeded rollouts (four shapes, three traffic
// levels, the shipped config's checks), where a judge on point estimates
// of p99 rolled back the Python servers twice in a row.
func TestCalibrationRealShapedLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("calibration: 1,000 simulated rollouts")
	}
	total, rolledBack := 0, 0
	for i, sh := range realShapes() {
		for j, level := range trafficLevels {
			n := 84 // 4 shapes × 3 levels × 84 = 1,008 rollouts
			sc := scenario{rollout: shippedRollout, perInterval: level, interval: 2 * time.Second,
				stable: sh.stable, canary: sh.canary, pools: instances{}}
			got, all := runs(t, n, uint64(20000+1000*i+100*j), sc)
			total += n
			rolledBack += got[RolledBack]
			t.Logf("%s, %d per interval: %v; rolled back:\n  %s", sh.name, level, got, reasonsOf(all, RolledBack, 3))
			if got[Paused] > n/20 {
				t.Errorf("%s, %d per interval: %d of %d identical builds paused:\n  %s", sh.name, level, got[Paused], n, reasonsOf(all, Paused, 3))
			}
		}
	}
	t.Logf("%d false rollbacks in %d rollouts of an identical build on real-shaped latency", rolledBack, total)
	if rolledBack > 1 {
		t.Errorf("%d of %d identical builds rolled back, want at most 1", rolledBack, total)
	}
}

// The same shapes still catch a canary 100 ms slower on every request.
func TestCalibrationRealShapedRegressionCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("calibration: simulated rollouts")
	}
	slower := func(parts ...component) []float64 {
		for i := range parts {
			parts[i].median += 100 * time.Millisecond
		}
		return mixtureProbs(parts...)
	}
	for _, tc := range []struct {
		name   string
		stable []float64
		canary []float64
	}{
		{"bimodal +100ms", mixtureProbs(component{0.8, 3 * time.Millisecond, 0.25}, component{0.2, 40 * time.Millisecond, 0.3}),
			slower(component{0.8, 3 * time.Millisecond, 0.25}, component{0.2, 40 * time.Millisecond, 0.3})},
		{"heavy-tailed +100ms", mixtureProbs(component{1, 8 * time.Millisecond, 1.0}), slower(component{1, 8 * time.Millisecond, 1.0})},
	} {
		caught, total := 0, 0
		for i, level := range trafficLevels {
			sc := scenario{rollout: shippedRollout, perInterval: level, interval: 2 * time.Second, pools: instances{},
				stable: poolModel{errRate: 0.005, latency: tc.stable}, canary: poolModel{errRate: 0.005, latency: tc.canary}}
			got, all := runs(t, 100, uint64(30000+1000*i), sc)
			total += 100
			caught += got[RolledBack]
			t.Logf("%s, %d per interval: %v; not caught:\n  %s", tc.name, level, got, reasonsOf(all, Promoted, 2))
		}
		if rate := float64(caught) / float64(total); rate < 0.99 {
			t.Errorf("%s: caught %.1f%%, want at least 99%%", tc.name, 100*rate)
		}
	}
}

// gettingStartedRollout is docs/getting-started.md's rollout block.
const gettingStartedRollout = `{ stable: v1, canary: v2, steps: [10, 50, 100], interval: 20s, min_requests: 100,
      analysis: { max_error_rate: 0.02, max_latency_p99: 500ms, compare_to_stable: {} } }`

// What getting started promises, measured: at 50 requests a second on
// Python-like servers (bimodal latency, 0.5% errors), how many of v2's
// requests a step takes to pass and how long promotion takes. The doc
// quotes these figures; the test holds it to them.
func TestGettingStartedPromise(t *testing.T) {
	if testing.Short() {
		t.Skip("calibration: simulated rollouts")
	}
	shape := mixtureProbs(component{0.8, 3 * time.Millisecond, 0.25}, component{0.2, 40 * time.Millisecond, 0.3})
	sc := scenario{rollout: strings.NewReplacer("v1", "blue", "v2", "green").Replace(gettingStartedRollout),
		perInterval: 50 * 20, interval: 20 * time.Second, pools: instances{},
		stable: poolModel{errRate: 0.005, latency: shape}, canary: poolModel{errRate: 0.005, latency: shape}}
	got, all := runs(t, 200, 40000, sc)
	var analyses, served []int
	for _, o := range all {
		if o.phase == Promoted {
			analyses = append(analyses, o.analyses)
			served = append(served, int(o.canaryServed))
		}
	}
	sort.Ints(analyses)
	sort.Ints(served)
	if len(analyses) < 190 {
		t.Fatalf("%v: want nearly all 200 promoted", got)
	}
	med, p90 := analyses[len(analyses)/2], analyses[len(analyses)*9/10]
	t.Logf("getting started at 50 req/s: %v; promoted after a median of %d analyses (%v), p90 %d (%v); v2 served a median of %d requests before",
		got, med, time.Duration(med)*20*time.Second, p90, time.Duration(p90)*20*time.Second, served[len(served)/2])
	// docs/getting-started.md: "about three minutes, four at most".
	if d := time.Duration(p90) * 20 * time.Second; d > 4*time.Minute {
		t.Errorf("p90 promotion after %v; the doc promises four minutes at most", d)
	}
}
