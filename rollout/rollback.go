package rollout

import (
	"context"
	"fmt"
	"time"

	"canaryd/config"

	"go.uber.org/zap"
)

// Streams ends the long-lived requests a pool serves (package proxy's
// registry); CloseStreams returns how many it ended.
type Streams interface {
	CloseStreams(route, pool string) int
}

// StreamClose is when the streams a rolled back canary still serves end.
type StreamClose struct {
	Pool string    `json:"pool"`
	At   time.Time `json:"at"`
}

// closeGrace: a member that learns of a close more than this late (a
// restart long after) does not close: whatever streams the pool serves by
// then are not the rolled back release's traffic.
const closeGrace = time.Minute

// unwind takes the next step down of a gradual rollback when it is due.
// Called from the loop.
func (c *controller) unwind(now time.Time) {
	c.mu.Lock()
	if c.st.Phase != RolledBack || len(c.st.Unwind) == 0 || now.Before(c.st.UnwindAt) || c.m.halted.Load() {
		c.mu.Unlock()
		return
	}
	c.st.Weight, c.st.Unwind = c.st.Unwind[0], c.st.Unwind[1:]
	c.st.UnwindAt = now.Add(c.spec.Rollback.Interval.D())
	why := fmt.Sprintf("gradual rollback: canary to %s%%", config.Percent(c.st.Weight))
	if len(c.st.Unwind) == 0 {
		c.st.Unwind, c.st.UnwindAt = nil, time.Time{}
		c.scheduleCloseLocked(now)
	}
	c.publishWeightLocked()
	c.transitionLocked(now, RolledBack, why, nil)
	c.mu.Unlock()
	c.commit()
}

// scheduleClose sets when the canary's streams end, once it has no
// weight left: rollback.close_streams_after from now. c.mu held.
func (c *controller) scheduleCloseLocked(now time.Time) {
	if d := c.spec.Rollback.CloseStreamsAfter.D(); d > 0 {
		c.st.CloseStreams = &StreamClose{Pool: c.st.Canary, At: now.Add(d)}
	}
}

// noteCloseLocked tells the manager's closer what the state asks of this
// member (on the leader and on followers alike). c.mu held.
func (c *controller) noteCloseLocked() {
	c.m.noteClose(c.route, c.st.CloseStreams)
}

func (m *Manager) noteClose(route string, sc *StreamClose) {
	m.closeMu.Lock()
	defer m.closeMu.Unlock()
	if sc == nil {
		delete(m.closing, route)
		return
	}
	if done, ok := m.closed[route]; ok && done.Equal(sc.At) {
		return
	}
	m.closing[route] = *sc
}

// runCloser ends streams when their time comes, every tripwire tick.
func (m *Manager) runCloser(ctx context.Context) {
	tick := time.NewTicker(config.TripwireResolution)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			m.closeDue(now)
		}
	}
}

func (m *Manager) closeDue(now time.Time) {
	type due struct {
		route string
		sc    StreamClose
	}
	var todo []due
	m.closeMu.Lock()
	for route, sc := range m.closing {
		if !now.Before(sc.At) {
			delete(m.closing, route)
			m.closed[route] = sc.At
			if now.Sub(sc.At) < closeGrace {
				todo = append(todo, due{route, sc})
			}
		}
	}
	m.closeMu.Unlock()
	for _, d := range todo {
		n := m.deps.Streams.CloseStreams(d.route, d.sc.Pool)
		m.deps.Log.Info("rollback: closed the streams the canary still served", zap.String("route", d.route), zap.String("pool", d.sc.Pool), zap.Int("streams", n))
		if c := m.get(d.route); c != nil && m.Leading() {
			c.mu.Lock()
			if sc := c.st.CloseStreams; sc != nil && sc.At.Equal(d.sc.At) {
				c.st.record(Event{At: now, Kind: KindAnalysis, From: c.st.Phase, To: c.st.Phase, Step: c.st.StepIndex + 1, WeightBP: c.st.Weight,
					Reason: fmt.Sprintf("closed %d streams (WebSockets, event streams, gRPC) that %s still served, %v after the rollback (rollback.close_streams_after)",
						n, d.sc.Pool, c.spec.Rollback.CloseStreamsAfter)})
			}
			c.mu.Unlock()
			c.persist()
		}
	}
}
