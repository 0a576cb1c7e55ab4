package rollout

import (
	"fmt"
	"time"
)

// control runs an operator's command.
func (c *controller) control(action Action) error {
	now := time.Now()
	c.mu.Lock()
	from := c.st.Phase
	var err error
	switch action {
	case Promote:
		if !from.judging() && from != Paused {
			err = fmt.Errorf("cannot promote a rollout that is %s", from)
			break
		}
		if !c.st.BakeUntil.IsZero() {
			c.finishBakeLocked(now, "promoted by operator: the bake ended early", nil)
			break
		}
		c.st.Shadow, c.st.Segment = false, false
		c.enterStepLocked(now, len(c.spec.Steps)-1)
		c.transitionLocked(now, from, "promoted by operator"+c.startBakeLocked(now), nil)
	case Abort:
		// Honoured during a drain too: sending everyone back to stable is
		// the operator's call, and the state saved is the rolled back one.
		if from == RolledBack && c.st.Weight > 0 {
			// On the way down of a gradual rollback: the rest at once.
			c.rollbackModeLocked(now, "aborted by operator during the gradual rollback: canary to 0% at once", c.st.LastVerdicts, true)
			break
		}
		if !from.judging() && from != Paused && from != Promoted {
			err = fmt.Errorf("cannot abort a rollout that is %s", from)
			break
		}
		c.rollbackLocked(now, "aborted by operator", nil)
	case Pause:
		if !from.judging() {
			err = fmt.Errorf("cannot pause a rollout that is %s", from)
			break
		}
		c.st.Phase = Paused
		c.transitionLocked(now, from, "paused by operator", nil)
	case Resume:
		switch from {
		case Paused:
			next := c.st.StepIndex + 1
			c.gateNotBefore = time.Time{} // a gate waited on is asked again at once
			if g := c.st.Gate; g != nil && len(g.Pending) > 0 {
				g.PendingSince = now // the approvals' expiry counts afresh
			}
			c.st.Phase = c.livePhaseLocked()
			if c.st.Phase == Baking {
				// Nothing was judged while paused: the bake starts over.
				c.st.BakeUntil = now.Add(c.bakeDuration())
			}
			c.st.Drift = false
			switch {
			case c.st.AtGate && c.st.Shadow:
				c.leaveShadow(now, "resumed past the gate; canary to %s%% (live)", nil)
			case c.st.Shadow:
				c.st.Phase = Shadowing
				c.st.Inconclusive, c.st.Gathering = 0, 0
				c.transitionLocked(now, from, "resumed by operator (shadow phase)", nil)
			case c.st.AtGate && c.st.Segment:
				c.leaveSegmentLocked(now, "resumed past the gate; canary to %s%% (weighted)", nil)
			case c.st.Segment:
				c.st.Phase = SegmentPhase
				c.st.Inconclusive, c.st.Gathering = 0, 0
				c.transitionLocked(now, from, "resumed by operator (segment phase)", nil)
			case c.st.AtGate && next < len(c.spec.Steps):
				c.enterStepLocked(now, next)
				c.transitionLocked(now, from, fmt.Sprintf("resumed past the gate; canary to %s%%", c.spec.Steps[next]), nil)
			default:
				c.st.Inconclusive, c.st.Gathering = 0, 0
				c.transitionLocked(now, from, "resumed by operator", nil)
			}
			c.publishWeightLocked()
		case RolledBack:
			c.startReleaseLocked(now, c.st.Stable, c.st.Canary, "retry of a rolled back release, by operator")
		default:
			err = fmt.Errorf("cannot resume a rollout that is %s", from)
		}
	default:
		err = fmt.Errorf("unknown action %q; use promote, abort, pause or resume", action)
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	c.commit()
	select { // the loop starts the gates the new state waits on
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}
