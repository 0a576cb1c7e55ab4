package rollout

import (
	"fmt"
	"math"
	"time"

	"canaryd/evidence"
)

// zFor is the two-sided normal quantile of a confidence level: 1.96 for
// 0.95, 2.58 for 0.99.
func zFor(confidence float64) float64 { return math.Sqrt2 * math.Erfinv(confidence) }

// wilson is the Wilson score interval of a proportion, k of n, at the
// two-sided z. It behaves where the textbook ±z·√(p(1−p)/n) does not: at 0
// and n successes and at small n, its bounds stay inside [0, 1] and do not
// collapse to a point. k may be fractional (a latency bucket split by a
// bound).
func wilson(k, n, z float64) (lo, hi float64) {
	if n <= 0 {
		return 0, 1
	}
	p := k / n
	z2 := z * z
	den := 1 + z2/n
	center := (p + z2/(2*n)) / den
	half := z * math.Sqrt(p*(1-p)/n+z2/(4*n*n)) / den
	return math.Max(0, center-half), math.Min(1, center+half)
}

// boundVerdict judges "the canary's share of bad requests is at most max"
// on k bad of n, with the Wilson interval at the confidence:
//   - fail when the whole interval is above max (above it with confidence);
//   - pass when the whole interval is at or below max;
//   - inconclusive (gathering) while the interval straddles max: the step
//     holds and its evidence grows until one side is clear.
//
// A bound of 0 admits no bad request at all: there is no interval to
// wait for, the first one fails and none passes.
func boundVerdict(check string, k, n, max, confidence float64, what string) Verdict {
	lo, hi := wilson(k, n, zFor(confidence))
	v := Verdict{Check: check, Value: k / n, Threshold: max, Low: lo, High: hi}
	interval := fmt.Sprintf("%s of %.0f = %s; %g%% interval %s–%s, max %s", fmtCount(k), n, fmtPct(k/n), 100*confidence, fmtPct(lo), fmtPct(hi), fmtPct(max))
	switch {
	case max == 0 && k > 0, max > 0 && lo > max:
		v.Result = Fail
		v.Reason = fmt.Sprintf("%s: %s: above the bound", what, interval)
	case max == 0 || hi <= max:
		v.Result = Pass
		v.Reason = fmt.Sprintf("%s: %s: below the bound", what, interval)
	default:
		v.Result = Inconclusive
		v.Gathering = true
		v.Reason = fmt.Sprintf("%s: %s: inconclusive; holding the step to gather more requests", what, interval)
		// The interval shrinks about the rate as 1/√n: it clears the bound
		// once its side toward the bound is shorter than the rate's
		// distance from it (the Wilson interval is not symmetric: each
		// side is scaled on its own).
		p := k / n
		side := hi - p // a rate below the bound passes when hi reaches it
		if p > max {
			side = p - lo
		}
		if d := math.Abs(p - max); d > 0 {
			v.More = math.Max(0, n*(side/d)*(side/d)-n)
		}
	}
	return v
}

// fmtCount prints a count of requests. A count read across a latency
// bucket is interpolated, so it can have a fraction; a person reads
// requests whole.
func fmtCount(k float64) string { return fmt.Sprintf("%.0f", math.Round(k)) }

// fmtPct prints a proportion as a percentage with the digits that matter.
func fmtPct(p float64) string {
	switch {
	case p == 0:
		return "0%"
	case p < 0.001:
		return fmt.Sprintf("%.3f%%", 100*p)
	case p < 0.1:
		return fmt.Sprintf("%.2f%%", 100*p)
	default:
		return fmt.Sprintf("%.1f%%", 100*p)
	}
}

// quantileBounds is a confidence interval of c's q-quantile that assumes
// nothing of the distribution's shape: of n requests, the true quantile
// lies between the requests of ranks n·q ∓ z·√(n·q·(1−q)) (the binomial
// count below it, normally approximated), read at the outer edges of their
// buckets. A p99 of a few hundred requests is two or three requests, and
// its bounds say so: on real servers' bimodal, heavy-tailed latency the
// point estimate alone swings by ×2 between identical builds.
func quantileBounds(c *evidence.Counts, q, confidence float64) (lo, hi time.Duration) {
	n := latencyTotal(c)
	_, top := evidence.BucketBounds(evidence.LatencyBuckets - 1)
	if n == 0 {
		return 0, top
	}
	spread := zFor(confidence) * math.Sqrt(n*q*(1-q))
	loRank, hiRank := math.Floor(n*q-spread), math.Ceil(n*q+spread)+1
	lo, hi = 0, top
	var seen float64
	for i, k := range c.Latency {
		if k == 0 {
			continue
		}
		seen += float64(k)
		bl, bh := evidence.BucketBounds(i)
		if loRank >= 1 && lo == 0 && seen >= loRank {
			lo = bl
		}
		if seen >= hiRank {
			return lo, bh
		}
	}
	return lo, top
}

// slowerThan counts the requests of c slower than d. The bucket that holds
// d counts in proportion to the part of it above d (the same linear
// interpolation Quantile uses), so the count does not jump by a whole
// bucket as d moves through it.
func slowerThan(c *evidence.Counts, d time.Duration) float64 {
	var k float64
	for i, n := range c.Latency {
		if n == 0 {
			continue
		}
		lo, hi := evidence.BucketBounds(i)
		switch {
		case lo >= d:
			k += float64(n)
		case hi > d && hi > lo:
			k += float64(n) * float64(hi-d) / float64(hi-lo)
		}
	}
	return k
}

func latencyTotal(c *evidence.Counts) float64 {
	var n uint64
	for _, x := range c.Latency {
		n += x
	}
	return float64(n)
}

// latencyBound judges max_latency_p99 as what it means: at most 1% of the
// canary's requests slower than the bound. That is a proportion, so it
// gets the same interval as the error rate, and a p99 over the bound on a
// few hundred requests (where the p99 is two or three requests) is
// inconclusive until the evidence says which side it is on.
func latencyBound(c *evidence.Counts, bound time.Duration, confidence float64) Verdict {
	n := latencyTotal(c)
	k := slowerThan(c, bound)
	v := boundVerdict("latency_p99", k, n, 0.01, confidence,
		fmt.Sprintf("canary p99 %v, max %v; requests slower than %v", c.Quantile(0.99).Round(time.Microsecond), bound, bound))
	v.Value, v.Threshold = c.Quantile(0.99).Seconds(), bound.Seconds()
	return v
}

// compareTail is the tail test of compare_to_stable. Mann-Whitney ranks
// whole distributions and barely moves when only the slowest few percent
// get slower; this asks the tail directly. The line is stable's p99 on the
// same window, so about 1% of stable's requests are beyond it; the share
// of canary requests beyond it is compared with stable's like an error
// rate (Beta posteriors; fail when P(canary share > ratio × stable's) is
// over the confidence, pass when it is under 1/2, hold in between). The
// effect-size bound is the whole-distribution test's: a failure also needs
// the canary's p99 past ratio × stable's and minDiff above it, so a
// significant but small change passes, and a canary whose p99 is under
// that bound with confidence passes however its share compares.
func compareTail(c, s *evidence.Counts, confidence, ratio float64, minDiff time.Duration) Verdict {
	s99, c99 := s.Quantile(0.99), c.Quantile(0.99)
	kc, nc := slowerThan(c, s99), latencyTotal(c)
	ks, ns := slowerThan(s, s99), latencyTotal(s)
	pWorse := pWorse(kc, nc, ks, ns, ratio, 0)
	// The effect is judged on the canary's interval, not its point
	// estimate: its p99 must be past ratio × stable's even at the low end
	// of its interval. (Stable's p99 rests on many more requests: its
	// point estimate stands.) The interval is at tailEffectConfidence: the
	// share test above already carries the confidence, and this one only
	// keeps a p99 of a handful of requests from making a small slowdown
	// look large.
	c99lo, _ := quantileBounds(c, 0.99, tailEffectConfidence)
	effect := time.Duration(ratio * float64(s99))
	if l := s99 + minDiff; l > effect {
		effect = l
	}
	v := Verdict{Check: "compare_tail", Value: pWorse, Threshold: confidence,
		Reason: fmt.Sprintf("slower than stable's p99 (%v): %s of the canary's requests (%s of %.0f) and %s of stable's (%s of %.0f); chance the canary's share is over %.2g× stable's: %.4f; canary p99 %v, fails above %v",
			s99.Round(10*time.Microsecond), fmtPct(kc/math.Max(nc, 1)), fmtCount(kc), nc, fmtPct(ks/math.Max(ns, 1)), fmtCount(ks), ns,
			ratio, pWorse, c99.Round(10*time.Microsecond), effect.Round(10*time.Microsecond))}
	// The canary's p99 is under the effect bound with confidence when at
	// most 1% of its requests are slower than the bound, by the interval
	// the threshold checks use. (Its point estimate alone is not enough on
	// a small sample, where the p99 is one or two requests.)
	_, hi := wilson(slowerThan(c, effect), nc, zFor(confidence))
	v.decide(pWorse > confidence && c99lo > effect, pWorse < passBelow || hi <= 0.01)
	if v.Gathering {
		v.More = morePWorse(kc, nc, ks, ns, ratio, 0, confidence)
	}
	return v
}

// tailEffectConfidence is the confidence of the canary's p99 interval in
// compare_tail's effect bound (TestCalibrationBadCanariesCaught and
// TestCalibrationRealShapedLatency hold it: at 0.99 the p99-only
// regression paused instead of rolling back in 14% of rollouts).
const tailEffectConfidence = 0.9

// decide sets a comparison's result: fail, else pass, else gathering
// (the step holds while the evidence grows).
func (v *Verdict) decide(fail, pass bool) {
	switch {
	case fail:
		v.Result = Fail
	case pass:
		v.Result = Pass
	default:
		v.Result = Inconclusive
		v.Gathering = true
		v.Reason += "; holding the step to gather more requests"
	}
}

// pWorse is P(p_c > ratio·p_s + floor) for two proportions, k of n each,
// with Beta(1+k, 1+n−k) posteriors and a normal approximation of the
// difference.
func pWorse(kc, nc, ks, ns, ratio, floor float64) float64 {
	mc, vc := betaMoments(kc, nc)
	ms, vs := betaMoments(ks, ns)
	mu := mc - (ratio*ms + floor)
	sigma := math.Sqrt(vc + ratio*ratio*vs)
	return normalCDF(mu / sigma)
}

func betaMoments(k, n float64) (mean, variance float64) {
	a, b := 1+k, 1+n-k
	mean = a / (a + b)
	variance = a * b / ((a + b) * (a + b) * (a + b + 1))
	return mean, variance
}

func normalCDF(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) }

// passBelow is the P(worse) under which a comparison passes. Between it
// and the confidence the step holds and gathers: every analysis of a
// holding step is another look, and a bad canary on a small lucky sample
// must not slip through one of them (TestCalibrationBadCanariesCaught).
const passBelow = 0.2
