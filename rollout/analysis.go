// Package rollout runs releases by itself: it moves a route's canary weight
// step by step while each step's analysis passes, and rolls back when it
// fails. Every check returns a typed verdict (pass, fail, inconclusive) with
// its numbers and reason; missing data is inconclusive, never a pass and
// never a failure.
package rollout

import (
	"fmt"
	"math"
	"time"

	"canaryd/config"
	"canaryd/evidence"
)

// Result of one check.
type Result string

const (
	Pass         Result = "pass"
	Fail         Result = "fail"
	Inconclusive Result = "inconclusive"
)

// Verdict is one check's judgement with its evidence.
type Verdict struct {
	Check  string  `json:"check"`
	Result Result  `json:"result"`
	Reason string  `json:"reason"`
	Value  float64 `json:"value"`
	// Threshold is the bound the value was held to, when there is one.
	Threshold float64 `json:"threshold,omitempty"`
	// Low and High are the confidence interval of the share of bad
	// requests, for the checks judged by one: errors for error_rate,
	// requests slower than the bound for latency_p99.
	Low  float64 `json:"low,omitempty"`
	High float64 `json:"high,omitempty"`
	// Gathering marks an inconclusive verdict that has data but not yet
	// enough to decide: the step holds and the evidence grows, so it does
	// not count towards max_inconclusive (which is for missing data), but
	// towards max_gathering.
	Gathering bool `json:"gathering,omitempty"`
	// Advisory verdicts are shown and recorded but decide nothing: the
	// canary's preview traffic (forced by header or cookie) in a weighted
	// rollout.
	Advisory bool `json:"advisory,omitempty"`
	// DryRun: the check or gate is configured dry_run (Advisory is set
	// too): its verdict is shown, recorded and counted, and decides
	// nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// More is, for a gathering verdict, about how many more canary
	// requests it needs to decide if what it has seen so far holds (the
	// interval narrows as 1/√n); 0 when there is no telling (the point
	// estimate sits on the bound).
	More float64 `json:"more_requests,omitempty"`
}

// sample is what an analysis judges: counts since the evidence began (the
// step's start, or the last failed analysis: see controller.decide).
type sample struct {
	canary, stable evidence.Counts
	// preview is the canary's forced traffic over the same span, when it is
	// judged apart (canary and linear rollouts).
	preview *evidence.Counts
	// shadow is set in the shadow phase: canary and stable are then the
	// copies and the real answers to the same requests.
	shadow *evidence.Shadow
	// canaryAvailable instances of the canary pool, -1 when unknown; and
	// the stable pool's.
	canaryAvailable, canaryTotal int
	stableAvailable, stableTotal int
}

// embeddedChecks judges the in-process numbers. With fewer than
// min_requests canary requests it returns one inconclusive verdict: no
// other check means anything yet.
func embeddedChecks(ro *config.Rollout, minRequests int, s sample) (vs []Verdict, gateMet bool) {
	switch {
	case s.canaryTotal > 0 && s.canaryAvailable == 0 && s.stableTotal > 0 && s.stableAvailable == 0:
		// Every instance of both pools is out: a health or config problem
		// (a probe path the instances do not answer, say), not the
		// canary's. It decides nothing, and once fixed it has cost the
		// release nothing.
		vs = append(vs, Verdict{Check: "canary_available", Result: Inconclusive, Value: 0,
			Reason: fmt.Sprintf("no instance of either pool is available (canary %d, stable %d configured, all out of rotation): a health or config problem, not the canary's; canaryd status says why", s.canaryTotal, s.stableTotal)})
	case s.canaryTotal > 0 && s.canaryAvailable == 0:
		vs = append(vs, Verdict{Check: "canary_available", Result: Fail, Value: 0,
			Reason: fmt.Sprintf("no canary instance is available (%d configured, all out of rotation) while stable has %d of %d", s.canaryTotal, s.stableAvailable, s.stableTotal)})
	}
	n := s.canary.Requests
	what := "canary requests"
	if s.shadow != nil {
		what = "shadow copies answered"
	}
	if n < uint64(minRequests) {
		// No canary request at all is missing data (max_inconclusive); a
		// trickle is evidence on its way (max_gathering).
		v := Verdict{Check: "min_requests", Result: Inconclusive, Value: float64(n), Threshold: float64(minRequests),
			Reason: fmt.Sprintf("%d of %d %s since the evidence began; holding", n, minRequests, what), Gathering: n > 0, More: float64(uint64(minRequests) - n)}
		if s.preview != nil && s.preview.Requests > 0 {
			vs = append(vs, previewVerdict(s.preview))
		}
		return append(vs, v), false
	}
	vs = append(vs, Verdict{Check: "min_requests", Result: Pass, Value: float64(n), Threshold: float64(minRequests),
		Reason: fmt.Sprintf("%d %s since the evidence began", n, what)})
	a := ro.Analysis
	if a.MaxErrorRate != nil {
		vs = append(vs, boundVerdict("error_rate", float64(s.canary.Errors), float64(n), *a.MaxErrorRate, a.Confidence, "canary errors"))
	}
	if a.MaxLatencyP99 > 0 {
		vs = append(vs, latencyBound(&s.canary, a.MaxLatencyP99.D(), a.Confidence))
	}
	if c := a.CompareToStable; c != nil {
		if s.stable.Requests < uint64(ro.MinRequests) {
			vs = append(vs, Verdict{Check: "compare_to_stable", Result: Inconclusive, Value: float64(s.stable.Requests), Threshold: float64(ro.MinRequests),
				Reason: fmt.Sprintf("only %d stable requests to compare with; need %d", s.stable.Requests, ro.MinRequests)})
		} else {
			vs = append(vs, compareErrors(s.canary.Errors, s.canary.Requests, s.stable.Errors, s.stable.Requests, c.Confidence, c.MaxRatio, *c.MinDifference))
			lat := []Verdict{
				compareLatency(&s.canary, &s.stable, c.Confidence, c.MaxRatio, c.MinLatencyDifference.D()),
				compareTail(&s.canary, &s.stable, c.Confidence, c.MaxRatio, c.MinLatencyDifference.D()),
			}
			if load := perInstanceLoad(s); load > maxLoadRatio {
				for i := range lat {
					lat[i].Advisory = true
					lat[i].Reason = fmt.Sprintf("judged apart: each of the canary's %d instances carried ×%.1f the requests of each of stable's %d, so its latency shows that load, not the build (latency decides at steps where the load per instance is within ×%.2g); %s",
						s.canaryAvailable, load, s.stableAvailable, maxLoadRatio, lat[i].Reason)
				}
			}
			vs = append(vs, lat...)
		}
	}
	if p := s.preview; p != nil && p.Requests > 0 {
		vs = append(vs, previewVerdict(p))
	}
	if sh := s.shadow; sh != nil && ro.Shadow != nil {
		if sh.Compared == 0 {
			vs = append(vs, Verdict{Check: "shadow_mismatch", Result: Inconclusive, Gathering: true,
				Reason: "no copy could be compared with its real answer yet (bodies past compare_max_bytes?); holding"})
		} else {
			vs = append(vs, boundVerdict("shadow_mismatch", float64(sh.Mismatches), float64(sh.Compared), *ro.Shadow.MaxMismatchRate, a.Confidence, "copies answered differently"))
		}
	}
	return vs, true
}

// maxLoadRatio is how much more load each canary instance may carry than
// each stable one for latency to decide. A canary of one instance at 50%
// beside a stable pool of two carries twice the load per instance: a
// server that queues (a single-threaded one, a busy one) is slower there
// whatever its build, and an identical build would be rolled back. Such
// steps judge errors only; latency decided at the earlier steps, where the
// canary's share per instance was smaller.
const maxLoadRatio = 1.25

// perInstanceLoad is how many requests each canary instance served for
// each one a stable instance served, over the sample; 0 when unknown.
func perInstanceLoad(s sample) float64 {
	if s.canaryAvailable <= 0 || s.stableAvailable <= 0 || s.stable.Requests == 0 {
		return 0
	}
	return (float64(s.canary.Requests) / float64(s.canaryAvailable)) / (float64(s.stable.Requests) / float64(s.stableAvailable))
}

// previewVerdict reports the canary's preview traffic of a weighted
// rollout. Those requests are chosen by clients (a header or a cookie
// names the pool), not by the schedule: a handful aimed at a path that
// fails only on the canary would otherwise decide the step. So they are
// shown, and decide nothing.
func previewVerdict(p *evidence.Counts) Verdict {
	v := Verdict{Check: "preview", Advisory: true, Value: p.ErrorRate(),
		Reason: fmt.Sprintf("%d forced (preview) requests to the canary, %d failed (%s); judged apart: preview traffic is chosen by clients and decides no weighted step",
			p.Requests, p.Errors, fmtPct(p.ErrorRate()))}
	v.Result = Pass
	if p.Errors > 0 {
		v.Result = Fail
	}
	return v
}

// compareErrors asks whether the canary's error rate is worse than
// ratio × stable's + diff. Each rate gets a Beta(1+e, 1+n−e) posterior; the
// difference p_c − (ratio·p_s + diff) is approximated as normal, and
// P(worse) is its mass above 0. Three outcomes:
//   - fail when P(worse) > confidence;
//   - pass when the evidence leans the other way, P(worse) < 0.5;
//   - inconclusive in between: the step holds and gathers more requests,
//     which is what gives the test its power (a bad canary cannot slip
//     through a step on a lucky small sample).
//
// Requiring proof of "not worse" (P(worse) < 1 − confidence) instead would
// hold healthy canaries at realistic sample sizes; TestCompareSimulation
// measures the rates this rule gives.
func compareErrors(ec, nc, es, ns uint64, confidence, ratio, diff float64) Verdict {
	pWorse := pWorse(float64(ec), float64(nc), float64(es), float64(ns), ratio, diff)
	v := Verdict{Check: "compare_errors", Value: pWorse, Threshold: confidence,
		Reason: fmt.Sprintf("P(canary error rate > %.2g × stable + %.2g) = %.4f; canary %d of %d (%.2f%%), stable %d of %d (%.2f%%)",
			ratio, diff, pWorse, ec, nc, pct(ec, nc), es, ns, pct(es, ns))}
	v.decide(pWorse > confidence, pWorse < passBelow)
	if v.Gathering {
		v.More = morePWorse(float64(ec), float64(nc), float64(es), float64(ns), ratio, diff, confidence)
	}
	return v
}

// morePWorse estimates the canary requests a comparison judged by
// pWorse needs to leave its holding band, both samples growing alike at
// the rates seen: P(worse) is Φ(μ/σ) with σ shrinking as 1/√n, and μ (the
// prior's pull aside, as n grows) the difference of the raw rates; n·(z
// needed / z now)² reaches the confidence to fail when μ leans worse, or
// passBelow to pass when it leans better. 0 when μ is 0.
func morePWorse(kc, nc, ks, ns, ratio, floor, confidence float64) float64 {
	if nc <= 0 || ns <= 0 {
		return 0
	}
	_, vc := betaMoments(kc, nc)
	_, vs := betaMoments(ks, ns)
	z := (kc/nc - (ratio*ks/ns + floor)) / math.Sqrt(vc+ratio*ratio*vs)
	target := quantile(confidence)
	if z < 0 {
		target = quantile(passBelow)
	}
	if z == 0 || math.IsNaN(z) {
		return 0
	}
	return math.Max(0, nc*(target/z)*(target/z)-nc)
}

// quantile is the standard normal's inverse CDF.
func quantile(p float64) float64 { return math.Sqrt2 * math.Erfinv(2*p-1) }

func pct(e, n uint64) float64 {
	if n == 0 {
		return 0
	}
	return 100 * float64(e) / float64(n)
}

// compareLatency runs a one-sided Mann-Whitney U test ("canary slower") on
// the two latency histograms, where all values in a bucket tie (so the tie
// corrected variance is used), and bounds the effect size on confidence
// intervals, not point estimates: it fails only when the difference is
// significant at the confidence *and* the canary's p50 or p99 exceeds
// ratio × stable's by more than minDiff even at the low end of the
// canary's interval (quantileBounds; stable's rests on many more requests,
// and its point estimate stands). A
// significant but small slowdown passes; one whose point estimates are
// past the line but whose intervals still overlap it holds the step to
// gather more requests, which is what lets a real regression be caught
// and an identical build on noisy latency pass.
func compareLatency(c, s *evidence.Counts, confidence, ratio float64, minDiff time.Duration) Verdict {
	_, z := mannWhitney(c.Latency[:], s.Latency[:])
	p := 1 - normalCDF(z) // small when the canary is slower
	c50, s50 := c.Quantile(0.5), s.Quantile(0.5)
	c99, s99 := c.Quantile(0.99), s.Quantile(0.99)
	r50, r99 := ratioOf(c50, s50), ratioOf(c99, s99)
	c50lo, _ := quantileBounds(c, 0.5, confidence)
	c99lo, _ := quantileBounds(c, 0.99, confidence)
	v := Verdict{Check: "compare_latency", Value: p, Threshold: 1 - confidence,
		Reason: fmt.Sprintf("canary p50 %v vs stable %v (×%.2f), p99 %v vs %v (×%.2f); chance the canary is this much slower by luck: %.4g (a rank test over every request); fails when that is under %.2g and p50 or p99 is over ×%.2g and +%v at the low end of the canary's %g%% interval (its p99 at least %v)",
			c50.Round(10*time.Microsecond), s50.Round(10*time.Microsecond), r50, c99.Round(10*time.Microsecond), s99.Round(10*time.Microsecond), r99, p, 1-confidence, ratio, minDiff,
			100*confidence, c99lo.Round(10*time.Microsecond))}
	worse := func(c, s time.Duration) bool { return float64(c) > ratio*float64(s) && c-s > minDiff }
	significant := p < 1-confidence
	switch {
	case significant && (worse(c50lo, s50) || worse(c99lo, s99)):
		v.Result = Fail
	case significant && (worse(c50, s50) || worse(c99, s99)):
		v.decide(false, false) // past the line on the point estimates only: gather
	default:
		v.Result = Pass
	}
	return v
}

func ratioOf(a, b time.Duration) float64 {
	if b <= 0 {
		if a <= 0 {
			return 1
		}
		return math.Inf(1)
	}
	return float64(a) / float64(b)
}

// mannWhitney returns U for the first sample (how often its values exceed
// the second's, ties counting half) and the z-score of U, tie corrected,
// with continuity correction.
func mannWhitney(a, b []uint64) (u, z float64) {
	var n1, n2, below, tieTerm float64
	for i := range a {
		n1 += float64(a[i])
		n2 += float64(b[i])
	}
	if n1 == 0 || n2 == 0 {
		return 0, 0
	}
	for i := range a {
		ai, bi := float64(a[i]), float64(b[i])
		u += ai * (below + bi/2)
		below += bi
		t := ai + bi
		tieTerm += t*t*t - t
	}
	n := n1 + n2
	mean := n1 * n2 / 2
	variance := n1 * n2 / 12 * ((n + 1) - tieTerm/(n*(n-1)))
	if variance <= 0 {
		return u, 0
	}
	d := u - mean
	switch {
	case d > 0.5:
		d -= 0.5
	case d < -0.5:
		d += 0.5
	default:
		d = 0
	}
	return u, d / math.Sqrt(variance)
}

// tripwire looks at the last window's counts: enough canary requests,
// failing at or above the rate, while stable stays under half of it (so a
// bad minute for everyone is not blamed on the canary). Its verdict is the
// cause a rollback shows.
func tripwire(t config.Tripwire, canaryReq, canaryErr, stableReq, stableErr uint64, span time.Duration) (Verdict, bool) {
	if canaryReq < uint64(t.MinRequests) {
		return Verdict{}, false
	}
	cr := float64(canaryErr) / float64(canaryReq)
	sr := 0.0
	if stableReq > 0 {
		sr = float64(stableErr) / float64(stableReq)
	}
	if cr >= t.MaxErrorRate && sr < t.MaxErrorRate/2 {
		return Verdict{Check: "tripwire", Result: Fail, Value: cr, Threshold: t.MaxErrorRate,
			Reason: fmt.Sprintf("tripwire: %d of %d canary requests failed in the last %v (%.0f%%; stable %.1f%%; fires at %.0f%%)",
				canaryErr, canaryReq, span.Round(100*time.Millisecond), 100*cr, 100*sr, 100*t.MaxErrorRate)}, true
	}
	return Verdict{}, false
}

// markDryRun makes the verdicts of dry-run checks advisory: shown,
// recorded and counted, deciding nothing.
func markDryRun(a *config.Analysis, vs []Verdict) {
	dry := map[string]bool{}
	for _, n := range a.DryRun {
		dry[n] = true
	}
	if p := a.Prometheus; p != nil {
		for _, c := range p.Checks {
			if c.DryRun {
				dry["prometheus:"+c.Name] = true
			}
		}
	}
	for _, c := range a.HTTP {
		if c.DryRun {
			dry["http:"+c.Name] = true
		}
	}
	for i := range vs {
		if dry[vs[i].Check] {
			vs[i].Advisory, vs[i].DryRun = true, true
			vs[i].Reason = "dry run, decides nothing: " + vs[i].Reason
		}
	}
}
