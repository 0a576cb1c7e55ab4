package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"canaryd/config"
	"canaryd/panics"

	"go.uber.org/zap"
)

// GateWait is a rollout waiting on its gates at one point of the release
// (State.Gate). No analysis runs meanwhile; the tripwire does, and the
// weights are those before the point (none for pre_traffic).
type GateWait struct {
	At    string    `json:"at"`
	Gates []string  `json:"gates"`
	Since time.Time `json:"since"`
	// Verdicts of the last run of the gates, when one failed or could not
	// decide (the wait goes on).
	Verdicts []Verdict `json:"verdicts,omitempty"`
	// Pending names the approval gates still waiting for a person, once
	// the point's http gates passed; PendingSince is when they began to
	// wait (and since a resume, their expiry counts from it).
	Pending      []string  `json:"pending,omitempty"`
	PendingSince time.Time `json:"pending_since,omitzero"`
}

// Approval is a person's go-ahead at an approval gate.
type Approval struct {
	// Gate names the approval gate; "" when one alone is pending.
	Gate string `json:"gate,omitempty"`
	// By: who approved, as they said (the admin token is shared, so
	// canaryd cannot tell).
	By string `json:"by"`
	// Source: cli, api or dashboard.
	Source string    `json:"source"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// Approval sources.
const (
	SourceCLI       = "cli"
	SourceAPI       = "api"
	SourceDashboard = "dashboard"
)

// ErrNotWaiting: an approval for a rollout that waits for none.
var ErrNotWaiting = errors.New("not waiting for an approval")

// httpGates are the gates canaryd calls, of a point's.
func httpGates(gs []config.Gate) []config.Gate {
	var out []config.Gate
	for _, g := range gs {
		if g.Kind != config.GateApproval {
			out = append(out, g)
		}
	}
	return out
}

// approvalNames are the approval gates of a point's.
func approvalNames(gs []config.Gate) []string {
	var out []string
	for _, g := range gs {
		if g.Kind == config.GateApproval {
			out = append(out, g.Name)
		}
	}
	return out
}

// gateRun is a run of one point's gates in flight, on its own goroutine
// (a gate that takes its whole timeout holds no analysis, tripwire or
// other route).
type gateRun struct {
	seq    uint64
	at     string
	cancel context.CancelFunc
}

// gateResult is what a run sends back to the controller's loop.
type gateResult struct {
	seq      uint64
	at       string
	release  string
	step     int
	verdicts []Verdict
}

// waitForGates makes the rollout wait at point at when it has gates there;
// false when it has none. c.mu held.
func (c *controller) waitForGatesLocked(now time.Time, at string) bool {
	gs := c.spec.GatesAt(at)
	if len(gs) == 0 {
		return false
	}
	names := make([]string, len(gs))
	for i, g := range gs {
		names[i] = g.Name
	}
	c.st.Gate = &GateWait{At: at, Gates: names, Since: now}
	c.gateNotBefore = time.Time{}
	if len(httpGates(gs)) == 0 {
		c.st.Gate.Pending, c.st.Gate.PendingSince = approvalNames(gs), now
	}
	return true
}

// kickGates starts the run the state waits on, or a rollback's advisory
// run, when none is in flight; and moves on from a wait whose gates a
// reload removed. Called from the controller's loop only, which saves what
// it returns.
func (c *controller) kickGates(ctx context.Context) judgement {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gateRun != nil || c.m.halted.Load() {
		return unchanged
	}
	if j := c.reconcileGateLocked(time.Now()); j != unchanged {
		return j
	}
	at := ""
	switch {
	case c.rollbackGates:
		c.rollbackGates = false
		at = config.GateRollback
	case c.st.Gate != nil && len(c.st.Gate.Pending) == 0 && c.st.Phase.judging() && !time.Now().Before(c.gateNotBefore):
		at = c.st.Gate.At
	default:
		return unchanged
	}
	gs := httpGates(c.spec.GatesAt(at))
	if len(gs) == 0 {
		return unchanged
	}
	c.gateSeq++
	rctx, cancel := context.WithCancel(ctx)
	run := &gateRun{seq: c.gateSeq, at: at, cancel: cancel}
	c.gateRun = run
	req := c.gateRequestLocked(at)
	res := gateResult{seq: run.seq, at: at, release: c.st.Release, step: c.st.StepIndex}
	c.gateWG.Add(1)
	go func() {
		defer c.gateWG.Done()
		defer cancel()
		finished := false
		defer func() {
			if !finished { // a panic (recovered below, and reported): never a pass
				res.verdicts = append(res.verdicts, Verdict{Check: "gates", Result: Inconclusive, Reason: "the run of gates broke off (an internal error, reported); asked again later"})
			}
			select {
			case c.gateDone <- res:
			case <-ctx.Done():
			}
		}()
		defer panics.Recover(c.m.deps.OnPanic, "rollout gates")
		for i := range gs {
			g := &gs[i]
			req.Gate, req.DryRun = g.Name, g.DryRun
			v := c.m.gates.call(rctx, g, gateBody(g, req))
			res.verdicts = append(res.verdicts, v)
			if !v.Advisory && v.Result != Pass {
				break // the point does not pass; later gates need not run
			}
		}
		finished = true
	}()
	return unchanged
}

// reconcileGate moves on from a wait whose gates are no longer in the
// config (a reload removed them): the approvals still configured are what
// it waits for; with none left at its stage, the point passes. c.mu held.
func (c *controller) reconcileGateLocked(now time.Time) judgement {
	w := c.st.Gate
	if w == nil || !c.st.Phase.judging() {
		return unchanged
	}
	gs := c.spec.GatesAt(w.At)
	approvals := approvalNames(gs)
	if len(w.Pending) > 0 {
		w.Pending = slices.DeleteFunc(w.Pending, func(n string) bool { return !slices.Contains(approvals, n) })
		if len(w.Pending) > 0 {
			return unchanged
		}
	} else if len(httpGates(gs)) > 0 {
		return unchanged
	} else if len(approvals) > 0 {
		w.Pending, w.PendingSince = approvals, now
		c.gateEventLocked(now, fmt.Sprintf("the %s gates the rollout waited on are gone from the config; waiting for the approval of %s", w.At, strings.Join(approvals, ", ")), nil)
		return changedState
	}
	return c.gatesPassedLocked(now, c.st.Phase, w.At, fmt.Sprintf("the %s gates the rollout waited on are gone from the config", w.At), nil)
}

// gateRequestLocked describes what is about to happen at point at. c.mu
// held.
func (c *controller) gateRequestLocked(at string) gateRequest {
	steps := c.steps()
	next := c.st.Weight
	switch at {
	case config.GatePreTraffic:
		if c.spec.Shadow == nil && c.spec.Segment == "" {
			next = steps[0]
		}
	case config.GateStep, config.GatePrePromotion:
		if i := c.nextStepLocked(); i < len(steps) {
			next = steps[i]
		}
	}
	return gateRequest{
		Route: c.route, Release: c.st.Release, At: at, Phase: c.st.Phase,
		Step: c.st.StepIndex + 1, Steps: len(steps), Stable: c.st.Stable, Canary: c.st.Canary,
		StableVersion: c.st.StableVersion, CanaryVersion: c.st.CanaryVersion,
		CanaryWeight: float64(c.st.Weight) / 100, NextWeight: float64(next) / 100,
	}
}

// nextStepLocked is the step a passed analysis moves to: the first live
// (or weighted) one from the shadow or segment phase. c.mu held.
func (c *controller) nextStepLocked() int {
	if c.st.Shadow || c.st.Segment {
		return 0
	}
	return c.st.StepIndex + 1
}

// gateFinished acts on a run's verdicts, and saves what changed.
func (c *controller) gateFinished(res gateResult) {
	switch c.gateDecide(res) {
	case changedWeights:
		c.commit()
	case changedState:
		c.persist()
	}
}

func (c *controller) gateDecide(res gateResult) judgement {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gateRun == nil || c.gateRun.seq != res.seq {
		return unchanged
	}
	c.gateRun = nil
	for _, v := range res.verdicts {
		c.m.deps.Metrics.Gate(c.route, strings.TrimPrefix(v.Check, "gate:"), string(v.Result))
	}
	if res.at == config.GateRollback {
		if c.st.Release != res.release {
			return unchanged
		}
		// Recorded without replacing the reason: why it rolled back stays
		// what status shows.
		c.st.UpdatedAt = now
		c.recordLocked(Event{At: now, Kind: KindGate, From: c.st.Phase, To: c.st.Phase, Step: c.st.StepIndex + 1, WeightBP: c.st.Weight,
			Reason: "rollback gates answered (advisory: they decide nothing): " + listVerdicts(res.verdicts), Verdicts: res.verdicts})
		return changedState
	}
	w := c.st.Gate
	// Moved meanwhile (an operator, a reload, a pause, a drain): what the
	// gates were asked about is not what is about to happen now.
	if w == nil || w.At != res.at || c.st.Release != res.release || c.st.StepIndex != res.step || !c.st.Phase.judging() || c.m.halted.Load() {
		return unchanged
	}
	var fails, incs []string
	for _, v := range res.verdicts {
		switch {
		case v.Advisory:
		case v.Result == Fail:
			fails = append(fails, v.Check+": "+v.Reason)
		case v.Result == Inconclusive:
			incs = append(incs, v.Check+": "+v.Reason)
		}
	}
	from := c.st.Phase
	spec := c.spec
	switch {
	case len(fails) > 0 && res.at == config.GatePostPromotion:
		c.rollbackLocked(now, "a post_promotion gate failed during the bake, back to "+c.st.Stable+": "+strings.Join(fails, "; "), res.verdicts)
		return changedWeights
	case len(fails) > 0:
		c.st.Failures++
		c.st.Inconclusive = 0
		if c.st.Failures >= spec.FailureLimit {
			c.rollbackLocked(now, fmt.Sprintf("%d failed analyses or gates (failure_limit %d): %s", c.st.Failures, spec.FailureLimit, strings.Join(fails, "; ")), res.verdicts)
			return changedWeights
		}
		if res.at == config.GatePreTraffic {
			// Still no traffic to judge: ask again after an interval.
			w.Verdicts = res.verdicts
			c.gateNotBefore = now.Add(spec.Interval.D())
			c.gateEventLocked(now, fmt.Sprintf("%s gate failed (%d of failure_limit %d); the canary still gets no traffic; asking again in %v: %s",
				res.at, c.st.Failures, spec.FailureLimit, spec.Interval, strings.Join(fails, "; ")), res.verdicts)
			return changedState
		}
		// Like a failed analysis: the step holds, and its evidence starts
		// afresh; the gates run again once an analysis of it passes.
		c.st.Gate = nil
		c.resetEvidenceLocked(now)
		c.gateEventLocked(now, fmt.Sprintf("%s gate failed (%d of failure_limit %d); holding the step, and its evidence starts afresh: %s",
			res.at, c.st.Failures, spec.FailureLimit, strings.Join(fails, "; ")), res.verdicts)
		c.log.Warn("rollout gate failed; holding the step", zap.String("route", c.route), zap.Strings("failed", fails))
		return changedState
	case len(incs) > 0:
		c.st.Inconclusive++
		w.Verdicts = res.verdicts
		c.gateNotBefore = now.Add(spec.Interval.D())
		if c.st.Inconclusive >= spec.MaxInconclusive {
			c.st.Phase = Paused
			c.publishWeightLocked()
			c.transitionLocked(now, from, fmt.Sprintf("no decision from the %s gates in %d tries in a row (the most rollout.max_inconclusive allows): %s; `canaryd resume %s` asks them again",
				res.at, c.st.Inconclusive, strings.Join(incs, "; "), c.route), res.verdicts)
			return changedWeights
		}
		c.gateEventLocked(now, fmt.Sprintf("no decision from the %s gates (%d of at most %d in a row before pausing); asking again in %v: %s",
			res.at, c.st.Inconclusive, spec.MaxInconclusive, spec.Interval, strings.Join(incs, "; ")), res.verdicts)
		return changedState
	}
	c.st.Inconclusive = 0
	why := fmt.Sprintf("%s gates passed (%s)", res.at, listVerdicts(res.verdicts))
	if names := approvalNames(spec.GatesAt(res.at)); len(names) > 0 {
		w.Verdicts, w.Pending, w.PendingSince = nil, names, now
		c.gateEventLocked(now, fmt.Sprintf("%s; waiting for the approval of %s: `canaryd approve %s`", why, strings.Join(names, ", "), c.route), res.verdicts)
		return changedState
	}
	return c.gatesPassedLocked(now, from, res.at, why, res.verdicts)
}

// gatesPassed goes on past a point whose gates all passed. c.mu held.
func (c *controller) gatesPassedLocked(now time.Time, from Phase, at, why string, vs []Verdict) judgement {
	c.st.Gate = nil
	switch at {
	case config.GatePostPromotion:
		c.gateEventLocked(now, fmt.Sprintf("%s; baking until %s", why, c.st.BakeUntil.Format(time.TimeOnly)), vs)
		return changedState
	case config.GatePreTraffic:
		c.beginTrafficLocked(now, from, why, vs)
		return changedWeights
	case config.GateStep:
		if c.nextStepLocked() == len(c.spec.Steps)-1 && c.waitForGatesLocked(now, config.GatePrePromotion) {
			next := "; the pre_promotion gates next, before 100%"
			if p := c.st.Gate.Pending; len(p) > 0 {
				next = fmt.Sprintf("; before 100%%, waiting for the approval of %s: `canaryd approve %s`", strings.Join(p, ", "), c.route)
			}
			c.gateEventLocked(now, why+next, vs)
			return changedState
		}
	}
	if c.advanceLocked(now, from, why, vs) {
		return changedWeights
	}
	return changedState
}

// approve takes a person's go-ahead at a pending approval gate; the last
// one pending moves the rollout on (out of a pause its expiry caused,
// too).
func (c *controller) approve(a Approval) error {
	c.mu.Lock()
	j, err := c.approveLocked(a)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	switch j {
	case changedWeights:
		c.commit()
	case changedState:
		c.persist()
	}
	return nil
}

func (c *controller) approveLocked(a Approval) (judgement, error) {
	w := c.st.Gate
	if w == nil || len(w.Pending) == 0 || !(c.st.Phase.judging() || c.st.Phase == Paused) {
		return unchanged, fmt.Errorf("route %s is %s, %w", c.route, c.st.Phase, ErrNotWaiting)
	}
	switch {
	case a.Gate == "" && len(w.Pending) > 1:
		return unchanged, fmt.Errorf("route %s waits for %d approvals (%s); name one with --gate (\"gate\" in the API)", c.route, len(w.Pending), strings.Join(w.Pending, ", "))
	case a.Gate == "":
		a.Gate = w.Pending[0]
	case !slices.Contains(w.Pending, a.Gate):
		return unchanged, fmt.Errorf("route %s has no pending approval %q; it waits for %s", c.route, a.Gate, strings.Join(w.Pending, ", "))
	}
	if a.By == "" {
		a.By = "(not given)"
	}
	now := time.Now()
	a.At = now
	w.Pending = slices.DeleteFunc(w.Pending, func(n string) bool { return n == a.Gate })
	v := Verdict{Check: "approval:" + a.Gate, Result: Pass, Reason: fmt.Sprintf("approved by %s (%s)", a.By, a.Source)}
	if a.Reason != "" {
		v.Reason += ": " + a.Reason
	}
	c.m.deps.Metrics.Gate(c.route, a.Gate, string(Pass))
	if len(w.Pending) > 0 {
		c.st.UpdatedAt = now
		c.recordLocked(Event{At: now, Kind: KindGate, From: c.st.Phase, To: c.st.Phase, Step: c.st.StepIndex + 1, WeightBP: c.st.Weight,
			Reason: v.Reason + "; still waiting for " + strings.Join(w.Pending, ", "), Verdicts: []Verdict{v}, Approval: &a})
		return changedState, nil
	}
	from := c.st.Phase
	if from == Paused {
		c.st.Phase = c.livePhaseLocked()
	}
	// The approval goes on the event it causes (the transition, or the
	// wait for the pre_promotion gates).
	c.approving = &a
	j := c.gatesPassedLocked(now, from, w.At, fmt.Sprintf("%s gates passed (%s)", w.At, v.Reason), []Verdict{v})
	c.approving = nil
	if from == Paused && j != changedWeights {
		c.publishWeightLocked()
		j = changedWeights
	}
	return j, nil
}

// livePhase is the phase a paused rollout resumes in. c.mu held.
func (c *controller) livePhaseLocked() Phase {
	switch {
	case !c.st.BakeUntil.IsZero():
		return Baking
	case c.st.Shadow:
		return Shadowing
	case c.st.Segment:
		return SegmentPhase
	}
	return Progressing
}

// expireApprovals acts when the pending approvals waited past their
// expires: on_expiry pause or abort (the strictest of the pending
// gates' wins). Called from the loop.
func (c *controller) expireApprovals(now time.Time) {
	c.mu.Lock()
	w := c.st.Gate
	if w == nil || len(w.Pending) == 0 || !c.st.Phase.judging() || c.m.halted.Load() {
		c.mu.Unlock()
		return
	}
	var expired []string
	abort := false
	for _, g := range c.spec.GatesAt(w.At) {
		if slices.Contains(w.Pending, g.Name) && now.Sub(w.PendingSince) >= g.Expires.D() {
			expired = append(expired, fmt.Sprintf("%s (expires %v)", g.Name, g.Expires))
			abort = abort || g.OnExpiry == config.OnExpiryAbort
		}
	}
	if len(expired) == 0 {
		c.mu.Unlock()
		return
	}
	why := fmt.Sprintf("nobody approved %s in time", strings.Join(expired, ", "))
	if abort {
		c.rollbackLocked(now, why+" (on_expiry: abort)", nil)
	} else {
		from := c.st.Phase
		c.st.Phase = Paused
		c.publishWeightLocked()
		c.transitionLocked(now, from, fmt.Sprintf("%s (on_expiry: pause); `canaryd approve %s` goes on, `canaryd resume %s` waits again", why, c.route, c.route), nil)
	}
	c.mu.Unlock()
	c.commit()
}

// gateEvent records a run of gates in the history. c.mu held.
func (c *controller) gateEventLocked(now time.Time, reason string, vs []Verdict) {
	c.st.Reason = reason
	c.st.UpdatedAt = now
	c.recordLocked(Event{At: now, Kind: KindGate, From: c.st.Phase, To: c.st.Phase, Step: c.st.StepIndex + 1, WeightBP: c.st.Weight, Reason: reason, Verdicts: vs})
}

// listVerdicts is "gate:a pass, gate:b fail (dry run)".
func listVerdicts(vs []Verdict) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.Check + " " + string(v.Result)
		if v.DryRun {
			parts[i] += " (dry run)"
		}
	}
	return strings.Join(parts, ", ")
}
