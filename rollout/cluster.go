package rollout

import (
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Cluster mode. Every member has a manager with the same routes; one, the
// leader, runs the controllers, and the others show and serve the states
// it writes. A follower's state changes only through Adopt.

// Leading reports whether this manager's controllers decide.
func (m *Manager) Leading() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leading
}

// Lead makes this member's controllers decide, from the states the store
// holds now (the last leader's): each rollout resumes at its step with its
// weights, its evidence restarted (the counts before are the old leader's
// to judge). member names this member in the history.
func (m *Manager) Lead(member string) {
	var ctrls []*controller
	m.mu.Lock()
	if m.leading || m.stopped {
		m.mu.Unlock()
		return
	}
	m.leading, m.leader = true, member
	for _, c := range m.ctrls {
		ctrls = append(ctrls, c)
	}
	m.mu.Unlock()
	now := time.Now()
	for _, c := range ctrls {
		saved, err := m.deps.Store.Load(c.route)
		c.mu.Lock()
		c.fromSavedLocked(now, saved, err, "the cluster's state", "resumed by new leader "+member)
		c.mu.Unlock()
		c.commit()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leading || m.stopped {
		return
	}
	for _, c := range m.ctrls {
		if m.started && m.stops[c.route] == nil {
			m.launch(c)
		}
	}
}

// Follow stops this member's controllers deciding (it lost the leadership
// or is leaving); the data plane keeps the weights it serves. It waits for
// a decision under way to end (its write is fenced off anyway).
func (m *Manager) Follow() {
	m.mu.Lock()
	if !m.leading {
		m.mu.Unlock()
		return
	}
	m.leading = false
	for name, stop := range m.stops {
		stop()
		delete(m.stops, name)
	}
	m.mu.Unlock()
	m.ctrlWG.Wait()
}

// Adopt serves the state the leader wrote for a route on a follower: the
// status and the metrics tell it, and the Sink gets its weights. On the
// leader it does nothing (its own controllers wrote it).
func (m *Manager) Adopt(st State) {
	m.mu.Lock()
	c := m.ctrls[st.Route]
	leading := m.leading
	m.mu.Unlock()
	if c == nil || leading {
		return
	}
	c.mu.Lock()
	if !c.sameReleaseLocked(&st) {
		// This member's pools hold another release: until they agree
		// (the leader pauses on config drift; dynamic pools converge),
		// its own file decides.
		mine := c.releaseForLocked(st.Stable, st.Canary)
		c.held = &st // adopted by Refresh once this member's pools agree
		c.mu.Unlock()
		c.log.Warn("the cluster's rollout state is of another release than this member's pools; keeping this member's weights",
			zap.String("route", st.Route), zap.String("cluster_release", st.Release), zap.String("release", mine))
		return
	}
	c.adoptLocked(st)
	o := c.weight.Load()
	c.mu.Unlock()
	c.push(o)
}

// adoptLocked serves a state of the leader's. c.mu held.
func (c *controller) adoptLocked(st State) {
	c.st, c.held = st, nil
	c.publishWeightLocked()
	c.m.deps.Metrics.SetRollout(c.route, c.st.StepIndex+1, c.st.Phase.String(), phaseNames)
	c.m.deps.Metrics.SetRoles(c.route, c.st.Stable, c.st.Canary)
}

// RestartEvidence starts a route's evidence afresh from now: the leader
// calls it once every member serves the step's weights, so no request
// served at the old weights is judged as the new step's. late names the
// members that did not confirm in time ("" when all did).
func (m *Manager) RestartEvidence(route, late string) {
	c := m.get(route)
	if c == nil {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.st.Phase.judging() {
		return
	}
	c.resetEvidenceLocked(now)
	if late != "" {
		c.analysisEventLocked(now, "members "+late+" did not confirm the step's weights in time; the step's evidence starts anyway", nil)
		c.log.Warn("members did not confirm the step's weights in time; evidence starts anyway", zap.String("route", route), zap.String("members", late))
	}
}

// fromSaved takes over a route from its saved state: the same release
// resumes where it was (why says so), another release or none starts
// afresh. where names the store in the history. c.mu held.
func (c *controller) fromSavedLocked(now time.Time, saved *State, err error, where, why string) {
	stable, canary := c.spec.Stable, c.spec.Canary
	switch {
	case (err != nil || saved == nil || !c.sameReleaseLocked(saved)) && c.pools[canary].ID == "":
		if saved != nil {
			c.st.History = saved.History
		}
		// no release yet: syncReleaseLocked below waits for one
	case err != nil:
		c.log.Error("rollout state unreadable; starting the release afresh", zap.String("route", c.route), zap.Error(err))
		c.startReleaseLocked(now, stable, canary, "new release ("+where+" unreadable)")
	case saved != nil && c.sameReleaseLocked(saved):
		c.resume(now, saved, why)
		if c.st.StableRelease == "" {
			// Written before roles could swap: what the stable pool
			// holds now is no new release.
			c.st.StableRelease = orEmpty(c.pools[c.st.Stable].ID)
		}
	case saved != nil:
		c.st.History = saved.History
		c.startReleaseLocked(now, stable, canary, fmt.Sprintf("new release %s (%s was of %s)", c.releaseForLocked(stable, canary), where, saved.Release))
	default:
		c.startReleaseLocked(now, stable, canary, "new release "+c.releaseForLocked(stable, canary))
	}
	// A canary with no instances waits; after a promotion, a release in
	// the other pool swaps the roles.
	c.syncReleaseLocked(now)
}

// sameReleaseLocked reports whether a saved state is of the release the
// pools hold now, under its own roles. c.mu held.
func (c *controller) sameReleaseLocked(st *State) bool {
	roles := (st.Stable == c.spec.Stable && st.Canary == c.spec.Canary) || (st.Stable == c.spec.Canary && st.Canary == c.spec.Stable)
	return roles && st.Release == c.releaseForLocked(st.Stable, st.Canary)
}

// follow sets a new controller of a follower from the cluster's state.
// c.mu held.
func (c *controller) followLocked(saved *State) {
	if saved != nil && c.sameReleaseLocked(saved) {
		c.st = *saved
		c.publishWeightLocked()
		c.m.deps.Metrics.SetRollout(c.route, c.st.StepIndex+1, c.st.Phase.String(), phaseNames)
		c.m.deps.Metrics.SetRoles(c.route, c.st.Stable, c.st.Canary)
		return
	}
	// Nothing from a leader yet: the file's weights serve until one
	// writes (moving toward the canary needs the leader).
	c.st = State{Route: c.route, Release: c.releaseForLocked(c.spec.Stable, c.spec.Canary), Strategy: c.spec.Strategy, Stable: c.spec.Stable, Canary: c.spec.Canary,
		Phase: Idle, Reason: "waiting for the cluster's leader to write this rollout's state"}
}

// resume continues a saved state of the same release: same phase, step
// and weights; the evidence and the tripwire start now (in-process counts
// restart with the process, and a new leader sums from its start). c.mu
// held.
func (c *controller) resume(now time.Time, saved *State, why string) {
	c.st = *saved
	spec := c.spec
	if c.st.Shadow && spec.Shadow == nil {
		c.leaveShadow(now, "the shadow phase was removed from the config; canary to %s%% (live)", nil)
	}
	if c.st.Segment && spec.Segment == "" {
		c.leaveSegmentLocked(now, "the segment was removed from the config; canary to %s%% (weighted)", nil)
	}
	c.st.StepStarted = now
	if c.st.StepIndex >= len(spec.Steps) {
		c.st.StepIndex = len(spec.Steps) - 1
	}
	c.resetBase(now)
	c.publishWeightLocked()
	c.transitionLocked(now, c.st.Phase, fmt.Sprintf("%s at step %d (canary %.2f%%)", why, c.st.StepIndex+1, float64(c.st.Weight)/100), nil)
}

// Drift pauses a route's rollout while members' settings of it differ
// (members names them; the leader calls it), and resumes it once they
// agree again (members empty), if it was drift that paused it.
func (m *Manager) Drift(route string, members []string) {
	c := m.get(route)
	if c == nil || !m.Leading() {
		return
	}
	now := time.Now()
	c.mu.Lock()
	from := c.st.Phase
	switch {
	case len(members) > 0 && from.judging():
		c.st.Phase, c.st.Drift = Paused, true
		c.publishWeightLocked()
		c.transitionLocked(now, from, fmt.Sprintf("paused: the config of route %s differs on members %s; make their files agree (it resumes by itself)",
			route, strings.Join(members, ", ")), nil)
	case len(members) == 0 && from == Paused && c.st.Drift:
		c.st.Drift = false
		c.st.Phase = c.livePhaseLocked()
		c.st.Inconclusive, c.st.Gathering = 0, 0
		c.resetEvidenceLocked(now)
		c.publishWeightLocked()
		c.transitionLocked(now, from, "resumed: every member has the same config of the route again", nil)
	default:
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.commit()
}
