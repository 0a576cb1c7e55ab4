package rollout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"canaryd/config"
	"canaryd/evidence"

	"go.uber.org/zap"
)

// controller runs one route's rollout. Its state is guarded by mu, which is
// never held while calling out (weights, Prometheus, disk, webhook).
type controller struct {
	m     *Manager
	route string
	log   *zap.Logger
	wake  chan struct{} // spec or release changed; buffered 1, never blocks

	// mu guards the fields below it; functions that need it held end in
	// Locked.
	mu   sync.Mutex
	spec *config.Rollout
	// pools is what the rollout's two pools hold now (setPoolsLocked).
	pools map[string]PoolRelease
	// held is the leader's latest state, on a follower whose pools did
	// not hold its release yet (dynamic pools converge a moment apart).
	held   *State
	st     State
	prom   *promChecker
	baseC  evidence.Traffic // canary counts when the evidence began
	baseS  evidence.Traffic
	baseSh evidence.Shadow // and the copies to the canary
	trip   []tripReading
	// gateRun is the run of gates in flight (nil: none); gateSeq numbers
	// runs, so a late answer of one the rollout moved past is dropped.
	gateRun *gateRun
	gateSeq uint64
	// gateNotBefore: a gate that failed or could not decide is asked
	// again after an interval, not at once.
	gateNotBefore time.Time
	// rollbackGates: a rollback happened and its gates are to be told.
	rollbackGates bool
	// approving is the approval being taken: the event it causes carries
	// it.
	approving *Approval

	// gateDone carries finished runs to the loop; gateWG waits for them.
	gateDone chan gateResult
	gateWG   sync.WaitGroup

	// persistM serializes the saves of the state (outside mu: a save
	// may wait on etcd).
	persistM sync.Mutex

	// Atomics, read without a lock.
	weight atomic.Pointer[Override] // what the table should carry now
	nextAt atomic.Int64             // unix ns of the next analysis tick
}

type tripReading struct {
	at                     time.Time
	cReq, cErr, sReq, sErr uint64
}

// Override is the weight a rollout imposes on its route.
type Override struct {
	Stable, Canary string
	CanaryBP       int // the stable pool gets the rest
	// Shadowing: the route mirrors to the canary (rollout.shadow).
	Shadowing bool
	// UnderWay: the rollout is progressing, paused, shadowing or in its
	// segment phase (a partitioned cluster member sends these routes to
	// stable).
	UnderWay bool
	// CanaryLive: the canary serves targeted traffic (the segment rule's,
	// propagated versions): from the segment phase to promotion, not in
	// the shadow phase, and not after a rollback.
	CanaryLive bool
	// Seq orders the overrides of one manager: a Sink keeps the highest.
	Seq uint64
}

// publishWeight sets what the table should carry from the state. The
// Sink gets it at the next commit. c.mu held.
func (c *controller) publishWeightLocked() {
	shadowing := c.st.Shadow && (c.st.Phase == Shadowing || c.st.Phase == Paused)
	underWay := c.st.Phase.UnderWay()
	// Before the pre_traffic gates pass, the canary gets no live request:
	// not even the segment's.
	preTraffic := c.st.Gate != nil && c.st.Gate.At == config.GatePreTraffic
	live := !c.st.Shadow && !preTraffic && (underWay || c.st.Phase == Promoted)
	c.weight.Store(&Override{Stable: c.st.Stable, Canary: c.st.Canary, CanaryBP: c.st.Weight, Shadowing: shadowing, UnderWay: underWay,
		CanaryLive: live, Seq: c.m.seq.Add(1)})
	c.noteCloseLocked()
}

func (c *controller) steps() []int {
	out := make([]int, len(c.spec.Steps))
	for i, w := range c.spec.Steps {
		out[i] = w.BasisPoints()
	}
	return out
}

// startRelease begins a rollout of what canary holds now, at its first
// step, with these roles. c.mu held.
func (c *controller) startReleaseLocked(now time.Time, stable, canary, reason string) {
	from := c.st.Phase
	if from == "" {
		from = Idle
	}
	sr, cr := c.pools[stable], c.pools[canary]
	c.st = State{
		Route: c.route, Release: c.releaseForLocked(stable, canary), Strategy: c.spec.Strategy,
		Stable: stable, Canary: canary, History: c.st.History, PastStables: c.st.PastStables,
		StableRelease: orEmpty(sr.ID), StableVersion: sr.Version, CanaryVersion: cr.Version,
	}
	c.st.Phase = Progressing
	if ps, ok := c.wasStableLocked(now, cr); ok {
		// A release that served everyone until recently, deployed again:
		// no steps, straight to 100%, baking with the tripwire on.
		c.enterStepLocked(now, len(c.spec.Steps)-1)
		why := reason + fmt.Sprintf("; fast revert: %s was the stable release until %s (within fast_revert %v), so it goes straight to 100%%",
			describe(canary, cr), ps.Until.Format(time.RFC3339), c.spec.FastRevert) + c.bakeForLocked(now, c.bakeDuration())
		c.resetBase(now)
		c.transitionLocked(now, from, why, nil)
		return
	}
	if c.waitForGatesLocked(now, config.GatePreTraffic) {
		// No request of any kind reaches the canary before its smoke
		// tests pass: weight 0, no copies, no segment.
		c.st.StepStarted = now
		c.publishWeightLocked()
		c.resetBase(now)
		c.transitionLocked(now, from, reason+fmt.Sprintf("; the canary gets no traffic until the pre_traffic gates pass (%s)", strings.Join(c.st.Gate.Gates, ", ")), nil)
		return
	}
	c.beginTrafficLocked(now, from, reason, nil)
}

// beginTraffic gives a starting release its first traffic: the first
// step, or the shadow or segment phase. c.mu held.
func (c *controller) beginTrafficLocked(now time.Time, from Phase, reason string, vs []Verdict) {
	c.st.Phase = Progressing
	c.enterStepLocked(now, 0)
	switch {
	case c.spec.Shadow != nil:
		// The shadow phase first: no live traffic, copies only.
		c.st.Phase, c.st.Shadow, c.st.Weight = Shadowing, true, 0
		c.publishWeightLocked()
	case c.spec.Segment != "":
		// The segment first: its requests only, no weighted user.
		c.st.Phase, c.st.Segment, c.st.Weight = SegmentPhase, true, 0
		c.publishWeightLocked()
	}
	c.resetBase(now)
	c.transitionLocked(now, from, reason, vs)
}

// enterSegment begins the segment phase after the shadow phase. c.mu
// held.
func (c *controller) enterSegmentLocked(now time.Time, reason string, vs []Verdict) {
	from := c.st.Phase
	c.st.Shadow, c.st.Segment = false, true
	c.enterStepLocked(now, 0)
	c.st.Phase, c.st.Weight = SegmentPhase, 0
	c.publishWeightLocked()
	c.resetBase(now)
	c.transitionLocked(now, from, reason, vs)
}

// leaveSegment ends the segment phase: the first weighted step begins
// (the segment stays on the canary). reason has one %s, the step's
// weight. c.mu held.
func (c *controller) leaveSegmentLocked(now time.Time, reason string, vs []Verdict) {
	from := c.st.Phase
	c.st.Segment = false
	c.st.Phase = Progressing
	c.enterStepLocked(now, 0)
	c.resetBase(now)
	c.transitionLocked(now, from, fmt.Sprintf(reason, c.spec.Steps[0]), vs)
}

// leaveShadow ends the shadow phase: the first live step begins, with its
// own evidence and tripwire. reason has one %s, the step's weight. c.mu
// held.
func (c *controller) leaveShadow(now time.Time, reason string, vs []Verdict) {
	if c.spec.Segment != "" {
		// reason's first clause says why the shadow phase ended.
		why, _, _ := strings.Cut(reason, ";")
		c.enterSegmentLocked(now, fmt.Sprintf("%s; the canary serves segment %q first", why, c.spec.Segment), vs)
		return
	}
	from := c.st.Phase
	c.st.Shadow = false
	c.st.Phase = Progressing
	c.enterStepLocked(now, 0)
	c.resetBase(now)
	c.transitionLocked(now, from, fmt.Sprintf(reason, c.spec.Steps[0]), vs)
}

// enterStep moves to step i and restarts the step's counts. c.mu held.
func (c *controller) enterStepLocked(now time.Time, i int) {
	steps := c.steps()
	if i >= len(steps) {
		i = len(steps) - 1
	}
	c.st.StepIndex = i
	c.st.Weight = steps[i]
	c.st.StepStarted = now
	c.st.Inconclusive, c.st.Gathering = 0, 0
	c.st.AtGate = false
	c.st.Gate = nil
	c.st.BakeUntil = time.Time{}
	c.st.Estimate = nil // the last step's; the next analysis makes this one's
	c.dropGateRunLocked()
	// A passed step clears the failures: failure_limit counts the failed
	// analyses of one step, so one false alarm at an early step and one
	// burst at a later one do not add up to a rollback.
	c.st.Failures = 0
	// The step's evidence starts now; the tripwire's window runs on
	// across steps (a failure rate does not depend on the weight).
	c.resetEvidenceLocked(now)
	if c.st.Weight == config.Full.BasisPoints() {
		c.st.Phase = Promoted
	}
	c.publishWeightLocked()
}

// dropGateRun cancels the run of gates in flight, whose answer no longer
// matters (the rollout moved past its point). c.mu held.
func (c *controller) dropGateRunLocked() {
	if r := c.gateRun; r != nil {
		r.cancel()
		c.gateRun = nil
	}
}

// resetBase starts the step's evidence, and the tripwire's, from now. c.mu
// held.
func (c *controller) resetBase(now time.Time) {
	c.resetEvidenceLocked(now)
	cn, sn := c.tripCountsLocked(c.baseC, c.baseS, c.baseSh)
	c.trip = []tripReading{{at: now, cReq: cn.Requests, cErr: cn.Errors, sReq: sn.Requests, sErr: sn.Errors}}
}

// tripCounts is what the tripwire watches: in the shadow phase the copies
// and the real answers to the same requests, else the judged traffic.
// c.mu held.
func (c *controller) tripCountsLocked(ct, st evidence.Traffic, sh evidence.Shadow) (canary, stable evidence.Counts) {
	if c.st.Shadow {
		return sh.Copies, sh.Primaries
	}
	if c.st.Segment {
		return segmentCounts(ct), c.judged(st)
	}
	return c.judged(ct), c.judged(st)
}

// resetEvidence starts the counts the next analysis judges from now. It
// runs when a step begins and after every failed analysis: each failure
// that counts towards failure_limit then rests on requests no other
// failure saw, so one burst fails one analysis at most. c.mu held.
func (c *controller) resetEvidenceLocked(now time.Time) {
	c.baseC = c.m.deps.Counters.PoolTraffic(c.route, c.st.Canary)
	c.baseS = c.m.deps.Counters.PoolTraffic(c.route, c.st.Stable)
	c.baseSh = c.m.deps.Counters.ShadowTraffic(c.route, c.st.Canary)
	c.st.EvidenceSince = now
}

// judged is the part of a pool's traffic that is evidence. In canary and
// linear rollouts that is the weighted traffic only: forced (preview)
// requests are chosen by clients, not by the schedule, and a handful of
// them aimed at a failing path must not decide a step. In blue_green the
// canary has no weight before the switch and the preview is the evidence
// by design (force.allow_from and force.secret_file keep it honest).
//
// Propagated requests (routes[].propagate) are judged with the weighted
// ones: the hop before chose their version by its own weighted pick, so
// they are as random a sample of users as the weighted traffic, for the
// canary and for stable alike; a backend behind a canary frontend may
// get no other traffic. Rule-targeted requests are chosen users (beta
// testers, a tenant) and are judged only in the segment phase.
func (c *controller) judged(t evidence.Traffic) evidence.Counts {
	if c.spec.Strategy == config.StrategyBlueGreen {
		return t.All()
	}
	w := t.Weighted
	w.Add(&t.Propagated)
	return w
}

// segmentCounts is the segment phase's evidence of the canary: its
// rule-targeted requests, and the propagated ones.
func segmentCounts(t evidence.Traffic) evidence.Counts {
	c := t.Targeted
	c.Add(&t.Propagated)
	return c
}

// transition records an event from phase `from` to the current state, and
// queues its side effects (metrics, log, webhook). c.mu held.
func (c *controller) transitionLocked(now time.Time, from Phase, reason string, vs []Verdict) {
	c.st.Reason = reason
	c.st.UpdatedAt = now
	e := Event{At: now, Kind: KindTransition, From: from, To: c.st.Phase, Step: c.st.StepIndex + 1, WeightBP: c.st.Weight, Reason: reason, Verdicts: vs}
	c.recordLocked(e)
	if c.st.Phase == Promoted && from != Promoted {
		c.retireStableLocked(now)
	}
	c.m.deps.Metrics.SetRollout(c.route, c.st.StepIndex+1, c.st.Phase.String(), phaseNames)
	c.m.deps.Metrics.SetRoles(c.route, c.st.Stable, c.st.Canary)
	c.log.Info("rollout "+c.st.Phase.String(), zap.String("route", c.route), zap.Stringer("from", from),
		zap.Int("step", c.st.StepIndex+1), zap.Float64("canary_weight", float64(c.st.Weight)/100),
		zap.String("reason", reason), zap.Any("verdicts", vs))
}

// recordLocked keeps an event in the history and sends it to the
// route's receivers (those whose events name it). c.mu held.
func (c *controller) recordLocked(e Event) {
	if e.Approval == nil {
		e.Approval = c.approving
	}
	c.st.record(e)
	c.m.notifier.send(c.route, e)
}

// analysisEvent records an analysis that held the step (failed, gathering
// or inconclusive) in the history, with its verdicts. c.mu held.
func (c *controller) analysisEventLocked(now time.Time, reason string, vs []Verdict) {
	c.st.Reason = reason
	c.st.UpdatedAt = now
	c.recordLocked(Event{At: now, Kind: KindAnalysis, From: c.st.Phase, To: c.st.Phase, Step: c.st.StepIndex + 1, WeightBP: c.st.Weight, Reason: reason, Verdicts: vs})
}

// commit applies what a transition changed: weights to the table, state to
// the store. Traffic moving toward stable is served at once; traffic moving
// toward the canary only once the state is saved, so that in a cluster a
// deposed leader's decision (a fenced write that fails) reaches no one.
// Called without c.mu.
func (c *controller) commit() {
	o := c.weight.Load()
	if o == nil {
		c.persist()
		return
	}
	if o.CanaryBP == 0 && !o.Shadowing {
		c.push(o)
		c.persist()
		return
	}
	if err := c.persist(); errors.Is(err, ErrNotLeader) {
		c.revert()
		return
	}
	c.push(o)
}

// revert goes back to the saved state after a write was fenced off: the
// decision is void, and what this member shows is the cluster's truth.
// Nothing is pushed (the table still serves the saved weights).
func (c *controller) revert() {
	saved, err := c.m.deps.Store.Load(c.route)
	if err != nil || saved == nil {
		return
	}
	c.mu.Lock()
	c.st = *saved
	c.publishWeightLocked()
	c.mu.Unlock()
}

func (c *controller) push(o *Override) {
	if c.m.deps.Sink != nil {
		c.m.deps.Sink.SetOverride(c.route, *o)
	}
}

// persist saves the state; only ErrNotLeader is returned (any other
// failure is logged: the decision stands, a restart would not resume it).
func (c *controller) persist() error {
	c.persistM.Lock()
	defer c.persistM.Unlock()
	c.mu.Lock()
	st := c.st
	st.History = append([]Event(nil), c.st.History...)
	c.mu.Unlock()
	err := c.m.deps.Store.Save(&st)
	switch {
	case errors.Is(err, ErrNotLeader):
		c.log.Warn("rollout decision dropped: this member lost the leadership before saving it", zap.String("route", c.route),
			zap.Stringer("phase", st.Phase), zap.Int("step", st.StepIndex+1))
		return err
	case err != nil:
		c.log.Error("cannot save rollout state; a restart would not resume it", zap.String("route", c.route), zap.Error(err))
	}
	return nil
}

func (c *controller) run(ctx context.Context) {
	c.mu.Lock()
	interval := c.spec.Interval.D()
	c.mu.Unlock()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	// A run of gates in flight ends with ctx; the loop waits for it, so
	// a stopped controller leaves nothing behind.
	defer c.gateWG.Wait()
	c.nextAt.Store(time.Now().Add(interval).UnixNano())
	trip := time.NewTicker(config.TripwireResolution)
	defer trip.Stop()
	for {
		switch c.kickGates(ctx) {
		case changedWeights:
			c.commit()
		case changedState:
			c.persist()
		}
		select {
		case <-ctx.Done():
			return
		case res := <-c.gateDone:
			c.gateFinished(res)
		case <-c.wake:
			c.mu.Lock()
			if d := c.spec.Interval.D(); d != interval {
				interval = d
				tick.Reset(d)
				c.nextAt.Store(time.Now().Add(d).UnixNano())
			}
			c.mu.Unlock()
		case now := <-tick.C:
			c.nextAt.Store(now.Add(interval).UnixNano())
			c.analyse(ctx)
		case now := <-trip.C:
			c.checkTripwire(now)
			c.expireApprovals(now)
			c.unwind(now)
		}
	}
}

// analyse judges the step so far, acts on the verdicts, and saves.
func (c *controller) analyse(ctx context.Context) {
	switch c.judge(ctx) {
	case changedWeights:
		c.commit()
	case changedState:
		c.persist()
	}
}

type judgement int

const (
	unchanged      judgement = iota
	changedState             // the history, verdicts or counters
	changedWeights           // and the phase or the weights
)

// judge runs one analysis and decides on it; analyse saves what it
// changed (the calibration simulation runs judge alone).
func (c *controller) judge(ctx context.Context) judgement {
	spec, st, prom, s, minRequests, ok := c.evidence()
	if !ok {
		return unchanged
	}
	since := st.EvidenceSince

	s.canaryTotal, s.canaryAvailable, _ = c.m.deps.Pools.PoolSummary(c.route, st.Canary)
	s.stableTotal, s.stableAvailable, _ = c.m.deps.Pools.PoolSummary(c.route, st.Stable)
	vs, gate := embeddedChecks(spec, minRequests, s)
	if gate && prom != nil {
		vs = append(vs, prom.run(ctx, spec.Analysis.Prometheus.Checks, c.route, st.Stable, st.Canary, time.Since(since))...)
	}
	if gate && !st.Shadow && len(spec.Analysis.HTTP) > 0 {
		// Like PromQL checks, they read live traffic's numbers: none in
		// the shadow phase.
		vs = append(vs, c.m.httpChecks.run(ctx, spec.Analysis.HTTP, checkVars{route: c.route, stable: st.Stable, canary: st.Canary, start: since, end: time.Now()})...)
	}
	markDryRun(&spec.Analysis, vs)

	c.mu.Lock()
	defer c.mu.Unlock()
	// Moved meanwhile by an operator or a reload, or the process began to
	// drain (Manager.Stop): what was judged is no longer what is served.
	if c.st.Phase != st.Phase || c.st.Release != st.Release || c.st.StepIndex != st.StepIndex || c.st.Shadow != st.Shadow || c.st.Segment != st.Segment ||
		!c.st.EvidenceSince.Equal(since) || c.st.Gate != nil || c.m.halted.Load() {
		return unchanged
	}
	for _, v := range vs {
		if !v.Advisory || v.DryRun { // canaryd_preview_requests_total counts the others
			c.m.deps.Metrics.Verdict(c.route, v.Check, string(v.Result))
		}
	}
	if c.decideLocked(time.Now(), vs) {
		return changedWeights
	}
	return changedState
}

// evidence is what the next analysis judges: the spec and state it runs
// on, the counts since the evidence began, and the Prometheus checker;
// ok is false when the rollout is not judged now. The lock is released by
// defer (the counts are a dependency's, which may panic).
func (c *controller) evidence() (spec *config.Rollout, st State, prom *promChecker, s sample, minRequests int, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.st.Phase.judging() || c.st.Gate != nil || c.m.halted.Load() {
		// Waiting on gates: they decide the step now (the tripwire
		// still watches it).
		return nil, State{}, nil, sample{}, 0, false
	}
	spec, st, prom = c.spec, c.st, c.prom
	if st.Phase == Baking && spec.Analysis.CompareToStable != nil {
		// The stable pool has no traffic left to compare with: the bake
		// judges the canary against its own bounds.
		cp := *spec
		cp.Analysis.CompareToStable = nil
		spec = &cp
	}
	minRequests = spec.MinRequests
	if st.Shadow && spec.Shadow != nil {
		// The shadow phase judges the copies against the real answers to
		// the same requests, and how often the two differ.
		sh := c.m.deps.Counters.ShadowTraffic(c.route, st.Canary).Sub(c.baseSh)
		s = sample{canary: sh.Copies, stable: sh.Primaries, shadow: &sh}
		minRequests = spec.Shadow.MinRequests
		prom = nil // PromQL checks read live traffic, which the canary has none of yet
	} else {
		cn := c.m.deps.Counters.PoolTraffic(c.route, st.Canary).Sub(c.baseC)
		sn := c.m.deps.Counters.PoolTraffic(c.route, st.Stable).Sub(c.baseS)
		s = sample{canary: c.judged(cn), stable: c.judged(sn)}
		if st.Segment {
			// The segment phase judges the segment's requests (the
			// canary's targeted traffic) against stable's weighted ones.
			s.canary = segmentCounts(cn)
		}
		if spec.Strategy != config.StrategyBlueGreen {
			s.preview = &cn.Preview
		}
	}
	return spec, st, prom, s, minRequests, true
}

// decide acts on one analysis. It returns whether the weights or phase
// changed; every analysis that holds the step goes into the history too.
// c.mu held.
func (c *controller) decideLocked(now time.Time, vs []Verdict) bool {
	c.st.LastVerdicts = vs
	c.st.Estimate = nil
	from := c.st.Phase
	var fails, inconclusive, gathering []string
	for _, v := range vs {
		switch {
		case v.Advisory:
		case v.Result == Fail:
			fails = append(fails, v.Check+": "+v.Reason)
		case v.Result == Inconclusive && v.Gathering:
			gathering = append(gathering, v.Check+": "+v.Reason)
		case v.Result == Inconclusive:
			inconclusive = append(inconclusive, v.Check+": "+v.Reason)
		}
	}
	spec := c.spec
	switch {
	case len(fails) > 0 && c.st.Phase == Baking:
		// After 100% there is no step to hold: a failure reverts at once.
		c.rollbackLocked(now, "the bake failed, back to "+c.st.Stable+": "+strings.Join(fails, "; "), vs)
		return true
	case len(fails) > 0:
		c.st.Failures++
		c.st.Inconclusive, c.st.Gathering = 0, 0
		if c.st.Failures >= spec.FailureLimit {
			c.rollbackLocked(now, fmt.Sprintf("%d failed analyses (failure_limit %d): %s", c.st.Failures, spec.FailureLimit, strings.Join(fails, "; ")), vs)
			return true
		}
		c.resetEvidenceLocked(now)
		c.analysisEventLocked(now, fmt.Sprintf("analysis failed (%d of failure_limit %d); holding the step, and its evidence starts afresh: %s",
			c.st.Failures, spec.FailureLimit, strings.Join(fails, "; ")), vs)
		c.log.Warn("rollout analysis failed; holding the step", zap.String("route", c.route),
			zap.Int("failures", c.st.Failures), zap.Int("failure_limit", spec.FailureLimit), zap.Strings("failed", fails))
		return false
	case len(inconclusive) > 0:
		c.st.Inconclusive++
		return c.holdLocked(now, c.st.Inconclusive, spec.MaxInconclusive, inconclusive, vs,
			"no data to judge in %d analyses in a row (the most rollout.max_inconclusive allows): %s; resume when fixed",
			"no data to judge yet (analysis %d of at most %d in a row before pausing); holding the step: %s")
	case len(gathering) > 0:
		// Evidence is coming in but does not decide yet: hold, and let it
		// grow (that is what gives the interval checks their power).
		c.st.Inconclusive = 0
		c.st.Gathering++
		c.st.Estimate = estimate(vs, now.Sub(c.st.EvidenceSince), c.spec.Interval.D())
		return c.holdLocked(now, c.st.Gathering, spec.MaxGathering, gathering, vs,
			"still undecided after %d analyses at this step (the most rollout.max_gathering allows): %s; resume to keep gathering, or promote or abort",
			"holding the step to gather more requests (analysis %d of at most %d before pausing): %s")
	}
	if c.st.Phase == Baking {
		return c.bakePassedLocked(now, vs)
	}
	next := c.nextStepLocked()
	if next >= len(spec.Steps) {
		return false // already at 100: promoted when it got there
	}
	at := config.GateStep
	if len(spec.GatesAt(at)) == 0 && next == len(spec.Steps)-1 {
		at = config.GatePrePromotion
	}
	if c.waitForGatesLocked(now, at) {
		why := fmt.Sprintf("asking the %s gates (%s)", at, strings.Join(c.st.Gate.Gates, ", "))
		if p := c.st.Gate.Pending; len(p) > 0 {
			why = fmt.Sprintf("waiting for the approval of %s: `canaryd approve %s`", strings.Join(p, ", "), c.route)
		}
		c.analysisEventLocked(now, fmt.Sprintf("analysis passed; %s before %s%%", why, spec.Steps[next]), vs)
		return false
	}
	return c.advanceLocked(now, from, "analysis passed", vs)
}

// advance moves past a passed step: to a manual gate (pause_before), out
// of the shadow or segment phase, or to the next weight. why says what
// passed. c.mu held.
func (c *controller) advanceLocked(now time.Time, from Phase, why string, vs []Verdict) bool {
	spec := c.spec
	next := c.nextStepLocked()
	if next >= len(spec.Steps) {
		return false
	}
	for _, g := range spec.PauseBefore {
		if g == spec.Steps[next] {
			c.st.Phase = Paused
			c.st.AtGate = true
			c.transitionLocked(now, from, fmt.Sprintf("manual gate before %s%%: %s; run `canaryd resume %s` to go on", g, why, c.route), vs)
			return true
		}
	}
	if c.st.Shadow {
		c.leaveShadow(now, "shadow phase passed; canary to %s%% (live)", vs)
		return true
	}
	if c.st.Segment {
		c.leaveSegmentLocked(now, "segment passed; canary to %s%% (weighted)", vs)
		return true
	}
	c.enterStepLocked(now, next)
	why = fmt.Sprintf("%s; canary to %s%%", why, spec.Steps[next])
	if c.st.Phase == Promoted {
		why += c.startBakeLocked(now)
	}
	c.transitionLocked(now, from, why, vs)
	return true
}

// startBake begins the bake after 100%, when the rollout has one, and
// says so for the reason ("" without a bake). c.mu held.
func (c *controller) startBakeLocked(now time.Time) string {
	if c.spec.Bake == nil {
		return ""
	}
	return c.bakeForLocked(now, c.bakeDuration())
}

// bakeDuration is how long a bake lasts: rollout.bake.duration, or one
// interval for a fast revert's without a bake. c.mu held.
func (c *controller) bakeDuration() time.Duration {
	if b := c.spec.Bake; b != nil {
		return b.Duration.D()
	}
	return c.spec.Interval.D()
}

// bakeFor bakes for d. c.mu held.
func (c *controller) bakeForLocked(now time.Time, d time.Duration) string {
	c.st.Phase = Baking
	c.st.BakeUntil = now.Add(d)
	c.st.Failures, c.st.Inconclusive, c.st.Gathering = 0, 0, 0
	c.resetEvidenceLocked(now)
	c.publishWeightLocked()
	why := fmt.Sprintf("; baking for %v: the canary is judged against its own bounds, and %s stays configured to revert to", d, c.st.Stable)
	if c.waitForGatesLocked(now, config.GatePostPromotion) {
		why += fmt.Sprintf("; the post_promotion gates (%s) run first", strings.Join(c.st.Gate.Gates, ", "))
	}
	return why
}

// bakePassed is a passed analysis in the bake: it ends the bake once its
// time is up (its gates passed: no analysis runs before). c.mu held.
func (c *controller) bakePassedLocked(now time.Time, vs []Verdict) bool {
	if now.Before(c.st.BakeUntil) {
		return false
	}
	c.finishBakeLocked(now, fmt.Sprintf("bake passed: at 100%% until its end with every analysis passing; %s is no longer needed", c.st.Stable), vs)
	return true
}

// finishBake ends the bake: promoted. c.mu held.
func (c *controller) finishBakeLocked(now time.Time, reason string, vs []Verdict) {
	from := c.st.Phase
	c.st.Phase = Promoted
	c.st.BakeUntil = time.Time{}
	c.st.Gate = nil
	c.dropGateRunLocked()
	c.publishWeightLocked()
	c.transitionLocked(now, from, reason, vs)
}

// hold keeps the step after an analysis that did not decide, the n-th in a
// row of its kind: it records the analysis, or pauses the rollout when n
// reaches max. It returns whether the phase changed. c.mu held.
func (c *controller) holdLocked(now time.Time, n, max int, why []string, vs []Verdict, pauseFmt, holdFmt string) bool {
	if n >= max {
		from := c.st.Phase
		c.st.Phase = Paused
		c.publishWeightLocked()
		c.transitionLocked(now, from, fmt.Sprintf(pauseFmt, n, strings.Join(why, "; ")), vs)
		return true
	}
	c.analysisEventLocked(now, fmt.Sprintf(holdFmt, n, max, strings.Join(why, "; ")), vs)
	return false
}

// rollback sends all traffic back to stable. vs are the verdicts that
// caused it; they stay the last verdicts, so that status shows why (none
// for an operator's abort, whose reason says it). c.mu held.
func (c *controller) rollbackLocked(now time.Time, reason string, vs []Verdict) {
	c.rollbackModeLocked(now, reason, vs, false)
}

// rollbackMode rolls back by rollout.rollback: at once, or gradually from
// the canary's weight down its steps (instant forces at once: the
// tripwire). c.mu held.
func (c *controller) rollbackModeLocked(now time.Time, reason string, vs []Verdict, instant bool) {
	from := c.st.Phase
	c.st.Phase = RolledBack
	c.st.Unwind = nil
	rb := &c.spec.Rollback
	if rb.Mode == config.RollbackGradual && !instant && !c.st.Shadow && !c.st.Segment {
		for _, w := range rb.Steps {
			if bp := w.BasisPoints(); bp < c.st.Weight {
				c.st.Unwind = append(c.st.Unwind, bp)
			}
		}
	}
	c.st.Weight = 0
	if len(c.st.Unwind) > 1 {
		c.st.Weight, c.st.Unwind = c.st.Unwind[0], c.st.Unwind[1:]
		c.st.UnwindAt = now.Add(rb.Interval.D())
		reason += fmt.Sprintf("; gradual rollback (rollback.mode): canary to %s%%, then down every %v", config.Percent(c.st.Weight), rb.Interval)
	} else {
		c.st.Unwind = nil
		c.scheduleCloseLocked(now)
	}
	c.st.Shadow, c.st.Segment = false, false
	c.st.Gate = nil
	c.st.BakeUntil = time.Time{}
	c.st.LastVerdicts = vs
	c.dropGateRunLocked()
	c.rollbackGates = len(c.spec.GatesAt(config.GateRollback)) > 0
	c.publishWeightLocked()
	c.transitionLocked(now, from, reason, vs)
}

// checkTripwire rolls back at once on an error burst of the canary.
func (c *controller) checkTripwire(now time.Time) {
	if c.tripwireFired(now) {
		c.commit()
	}
}

// tripwireFired takes one tripwire reading and rolls back when it fires.
// The lock is released by defer: a panic of a dependency read under it
// must not leave it held (package panics recovers the goroutine, and the
// drain still saves the state).
func (c *controller) tripwireFired(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.spec.Tripwire
	// It watches a gradual rollback too: a canary still serving on the way
	// down that bursts goes to 0 at once.
	unwinding := c.st.Phase == RolledBack && c.st.Weight > 0
	active := (c.st.Phase.UnderWay() || unwinding) && !t.Disabled && !c.m.halted.Load()
	cn, sn := c.tripCountsLocked(c.m.deps.Counters.PoolTraffic(c.route, c.st.Canary), c.m.deps.Counters.PoolTraffic(c.route, c.st.Stable),
		c.m.deps.Counters.ShadowTraffic(c.route, c.st.Canary))
	if !active {
		return false
	}
	r := tripReading{at: now, cReq: cn.Requests, cErr: cn.Errors, sReq: sn.Requests, sErr: sn.Errors}
	// The base is the newest reading at least a window old (or the release's
	// first one): the span judged is never shorter than the window, and at
	// most one reading longer. Readings before the base are dropped.
	c.trip = append(c.trip, r)
	keep := 0
	for i, old := range c.trip {
		if now.Sub(old.at) >= t.Window.D() {
			keep = i
		}
	}
	c.trip = c.trip[keep:]
	base := c.trip[0]
	v, fire := tripwire(t, r.cReq-base.cReq, r.cErr-base.cErr, r.sReq-base.sReq, r.sErr-base.sErr, now.Sub(base.at))
	if !fire {
		return false
	}
	c.trip = c.trip[len(c.trip)-1:]
	if unwinding {
		v.Reason += "; during the gradual rollback: canary to 0% at once"
	}
	c.rollbackModeLocked(now, v.Reason, []Verdict{v}, true)
	return true
}
