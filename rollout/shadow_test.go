package rollout

import (
	"context"
	"strings"
	"testing"
	"time"
)

const shadowRollout = `{ stable: blue, canary: green, steps: [10, 100], min_requests: 1000, failure_limit: 1,
      shadow: { percent: 20, min_requests: 50 }, analysis: { compare_to_stable: {} } }`

// A rollout with a shadow phase starts with no live canary traffic and
// copies going to it; a passing shadow phase begins the first live step.
func TestShadowPhasePasses(t *testing.T) {
	traffic := newSim()
	m, c := newTestManager(t, traffic, shadowRollout)
	if st := c.status(); st.Phase != Shadowing || !st.Shadow || st.ShadowPercent != 20 || st.CanaryWeight != 0 {
		t.Fatalf("start: %s, shadow %v at %v%%, canary %v%%", st.Phase, st.Shadow, st.ShadowPercent, st.CanaryWeight)
	}
	if o := overridesOf(m)["web"]; !o.Shadowing || o.CanaryBP != 0 {
		t.Fatalf("override at start: %+v", o)
	}
	traffic.add("blue", 5000, 0) // live traffic: all stable
	traffic.addShadow("green", 1000, 0, 0)
	c.analyse(context.Background())
	st := c.status()
	if st.Phase != Progressing || st.Shadow || st.CanaryWeight != 10 || !strings.Contains(st.Reason, "shadow phase passed; canary to 10% (live)") {
		t.Fatalf("after a good shadow phase: %s at %v%% (%s)", st.Phase, st.CanaryWeight, st.Reason)
	}
	if o := overridesOf(m)["web"]; o.Shadowing || o.CanaryBP != 1000 {
		t.Errorf("override after the shadow phase: %+v", o)
	}
	last := st.History[len(st.History)-1]
	if last.From != Shadowing || last.To != Progressing {
		t.Errorf("history: %+v", last)
	}
}

// Copies that fail, or answer differently from the real answers, fail
// the shadow phase: the rollback changes no user's traffic.
func TestShadowPhaseFails(t *testing.T) {
	for _, tc := range []struct {
		name             string
		errs, mismatched uint64
		check            string
	}{
		{"errors", 300, 300, "compare_errors"},
		{"mismatches", 0, 300, "shadow_mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			traffic := newSim()
			m, c := newTestManager(t, traffic, strings.Replace(shadowRollout, "failure_limit: 1,", "failure_limit: 1, tripwire: { disabled: true },", 1))
			traffic.addShadow("green", 1000, tc.errs, tc.mismatched)
			c.analyse(context.Background())
			st := c.status()
			if st.Phase != RolledBack || !strings.Contains(st.Reason, tc.check) {
				t.Fatalf("%s: %s (%s)", tc.name, st.Phase, st.Reason)
			}
			if o := overridesOf(m)["web"]; o.Shadowing || o.CanaryBP != 0 {
				t.Errorf("override after the rollback: %+v", o)
			}
		})
	}
}

// The tripwire watches the copies during the shadow phase.
func TestShadowTripwire(t *testing.T) {
	traffic := newSim()
	_, c := newTestManager(t, traffic, shadowRollout)
	traffic.addShadow("green", 40, 40, 40)
	c.checkTripwire(time.Now().Add(2 * time.Second))
	if st := c.status(); st.Phase != RolledBack || st.LastVerdicts[0].Check != "tripwire" {
		t.Fatalf("copies all failing: %s (%s)", st.Phase, st.Reason)
	}
}

// Pause and resume within the shadow phase keep it; promote leaves it.
func TestShadowControls(t *testing.T) {
	m, _ := newTestManager(t, newSim(), shadowRollout)
	if st, err := m.Control("web", "pause"); err != nil || st.Phase != Paused || !st.Shadow {
		t.Fatalf("pause: %s %v", st.Phase, err)
	}
	if o := overridesOf(m)["web"]; !o.Shadowing {
		t.Error("a paused shadow phase stopped mirroring")
	}
	if st, err := m.Control("web", "resume"); err != nil || st.Phase != Shadowing {
		t.Fatalf("resume: %s %v", st.Phase, err)
	}
	if st, err := m.Control("web", "promote"); err != nil || st.Phase != Promoted || st.Shadow || st.CanaryWeight != 100 {
		t.Fatalf("promote from the shadow phase: %s %v", st.Phase, err)
	}
	if o := overridesOf(m)["web"]; o.Shadowing {
		t.Error("still mirroring after promotion")
	}
}

// blue_green and linear take a shadow phase too: after it, blue_green's
// preview step (0%) and linear's first step.
func TestShadowWithOtherStrategies(t *testing.T) {
	for _, tc := range []struct {
		block  string
		weight float64
	}{
		{`{ strategy: blue_green, stable: blue, canary: green, min_requests: 10, shadow: { percent: 20, min_requests: 50 } }`, 0},
		{`{ strategy: linear, step: 20, stable: blue, canary: green, min_requests: 10, shadow: { percent: 20, min_requests: 50 } }`, 20},
	} {
		traffic := newSim()
		_, c := newTestManager(t, traffic, tc.block)
		if st := c.status(); st.Phase != Shadowing {
			t.Fatalf("%s: starts %s", tc.block, st.Phase)
		}
		traffic.addShadow("green", 100, 0, 0)
		c.analyse(context.Background())
		if st := c.status(); st.Phase != Progressing || st.Shadow || st.CanaryWeight != tc.weight {
			t.Errorf("%s: after the shadow phase %s at %v%% (%s)", tc.block, st.Phase, st.CanaryWeight, st.Reason)
		}
	}
}
