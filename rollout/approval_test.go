package rollout

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

// An approval gate holds the release until a person answers; the answer
// (who, from where, why) goes into the history, and the release moves on.
func TestApprovalHoldsUntilApproved(t *testing.T) {
	traffic := newSim()
	m := NewManager(Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
	m.Sync(webRoutes(t, `{ stable: blue, canary: green, steps: [10, 50, 100], min_requests: 10,
      gates: [ { name: qa, kind: approval, at: step }, { name: sign-off, kind: approval, at: pre_promotion } ] }`))
	c := m.get("web")
	if _, err := m.Approve("web", Approval{By: "eve", Source: SourceAPI}); !errors.Is(err, ErrNotWaiting) {
		t.Fatalf("an approval nobody waits for: %v", err)
	}
	traffic.add("green", 100, 0)
	traffic.add("blue", 900, 0)
	c.analyse(context.Background())
	st, _ := m.Status("web")
	if st.Gate == nil || strings.Join(st.Gate.Pending, ",") != "qa" || st.CanaryWeight != 10 {
		t.Fatalf("after the step's analysis: gate %+v at %v%%", st.Gate, st.CanaryWeight)
	}
	c.analyse(context.Background()) // no analysis while it waits
	if _, err := m.Approve("web", Approval{Gate: "sign-off", By: "eve"}); err == nil || !strings.Contains(err.Error(), `no pending approval "sign-off"; it waits for qa`) {
		t.Fatalf("approving the wrong gate: %v", err)
	}
	st, err := m.Approve("web", Approval{By: "alice", Source: SourceCLI, Reason: "QA signed off"})
	if err != nil || st.CanaryWeight != 50 || st.Gate != nil {
		t.Fatalf("approved: %v; %s at %v%%, gate %+v", err, st.Phase, st.CanaryWeight, st.Gate)
	}
	last := st.History[len(st.History)-1]
	if a := last.Approval; a == nil || a.By != "alice" || a.Source != SourceCLI || a.Reason != "QA signed off" || a.Gate != "qa" || a.At.IsZero() ||
		!strings.Contains(last.Reason, "approved by alice (cli): QA signed off") {
		t.Errorf("history: %+v (approval %+v)", last, last.Approval)
	}
	// Before 100%: the step gate again, then the pre_promotion one.
	traffic.add("green", 500, 0)
	traffic.add("blue", 500, 0)
	c.analyse(context.Background())
	st, _ = m.Status("web")
	if st.Gate == nil || strings.Join(st.Gate.Pending, ",") != "qa" {
		t.Fatalf("before 100%%: %+v", st.Gate)
	}
	m.Approve("web", Approval{By: "alice", Source: SourceDashboard})
	st, _ = m.Status("web")
	if st.Gate == nil || st.Gate.At != "pre_promotion" || strings.Join(st.Gate.Pending, ",") != "sign-off" || st.CanaryWeight != 50 {
		t.Fatalf("after qa: %+v at %v%%", st.Gate, st.CanaryWeight)
	}
	if st, _ = m.Approve("web", Approval{By: "bob", Source: SourceAPI}); st.Phase != Promoted {
		t.Errorf("after sign-off: %s (%s)", st.Phase, st.Reason)
	}
}

// Nobody answers within expires: on_expiry pause pauses (an approval
// then goes on), on_expiry abort rolls back.
func TestApprovalExpires(t *testing.T) {
	for _, tc := range []struct {
		onExpiry string
		want     Phase
	}{{"pause", Paused}, {"abort", RolledBack}} {
		traffic := newSim()
		m := NewManager(Deps{Counters: traffic, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
		m.Sync(webRoutes(t, `{ stable: blue, canary: green, steps: [10, 100], min_requests: 10,
      gates: [ { name: qa, kind: approval, at: step, expires: 1s, on_expiry: `+tc.onExpiry+` } ] }`))
		c := m.get("web")
		traffic.add("green", 100, 0)
		traffic.add("blue", 900, 0)
		c.analyse(context.Background())
		c.expireApprovals(time.Now())
		if st, _ := m.Status("web"); st.Phase != Progressing {
			t.Fatalf("%s: expired at once: %s", tc.onExpiry, st.Reason)
		}
		c.expireApprovals(time.Now().Add(2 * time.Second))
		st, _ := m.Status("web")
		if st.Phase != tc.want || !strings.Contains(st.Reason, "nobody approved qa (expires 1s) in time (on_expiry: "+tc.onExpiry+")") {
			t.Fatalf("%s: %s (%s)", tc.onExpiry, st.Phase, st.Reason)
		}
		if tc.want != Paused {
			if _, err := m.Approve("web", Approval{By: "late"}); !errors.Is(err, ErrNotWaiting) {
				t.Errorf("an approval after the rollback: %v", err)
			}
			continue
		}
		if st, err := m.Approve("web", Approval{By: "late"}); err != nil || st.Phase != Promoted {
			t.Errorf("approved while paused: %v, %s (%s)", err, st.Phase, st.Reason)
		}
	}
}
