package adminclient

import (
	"bytes"
	"strings"
	"testing"

	"canaryd/admin"
	"canaryd/rollout"
)

// The status line says what a pool serves now: its effective weight when
// health moved its share, the rate of the last 10 s, and the span its
// minute figures cover when the pool is younger than a minute.
func TestPrintRouteHonestNumbers(t *testing.T) {
	var b bytes.Buffer
	WriteRoute(&b, admin.RouteView{Name: "web", PathPrefix: "/", Pools: []admin.PoolView{
		{Name: "blue", Weight: 50, EffectiveWeight: 100, Instances: []admin.InstanceView{{Healthy: true}}, RecentRate: 190,
			LastMinute: admin.Traffic{Seconds: 16, RatePerSecond: 190, Requests: 3040}},
		{Name: "green", Weight: 50, EffectiveWeight: 0, Instances: []admin.InstanceView{{Healthy: false}}, RecentRate: 0,
			LastMinute: admin.Traffic{Seconds: 60, Requests: 4890}},
	}})
	out := b.String()
	for _, want := range []string{
		"blue        50.00% serving 100.00%", "190.0 req/s now  last 16s:",
		"green       50.00% serving 0.00%", "0/1 healthy    0.0 req/s now  last 1m:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// Status names the classes of traffic a pool has beyond the weighted
// one: targeted (rules, the segment, propagated versions), preview and
// shadow, each with its failures; none when it has none.
func TestPrintRouteTrafficClasses(t *testing.T) {
	var b bytes.Buffer
	WriteRoute(&b, admin.RouteView{Name: "web", PathPrefix: "/", Pools: []admin.PoolView{
		{Name: "blue", Weight: 100, EffectiveWeight: 100, Traffic: admin.ByClass{Weighted: admin.Count{Requests: 900}}},
		{Name: "green", Weight: 0, Traffic: admin.ByClass{Targeted: admin.Count{Requests: 40, Errors: 2}, Preview: admin.Count{Requests: 5}, Shadow: admin.Count{Requests: 7, Errors: 7}}},
	}})
	lines := strings.Split(b.String(), "\n")
	if strings.Contains(lines[1], "targeted") || strings.Contains(lines[1], "preview") {
		t.Errorf("blue has only weighted traffic: %s", lines[1])
	}
	if !strings.HasSuffix(lines[2], "  40 targeted (2 failed)  5 preview (0 failed)  7 shadow (7 failed)") {
		t.Errorf("green: %s", lines[2])
	}
}

func TestPrintSegmentPhase(t *testing.T) {
	var b bytes.Buffer
	WriteRoute(&b, admin.RouteView{Name: "web", PathPrefix: "/", Rollout: &rollout.Status{
		Strategy: "canary", Stable: "blue", Canary: "green", Phase: rollout.SegmentPhase, Segment: "beta", InSegment: true, FailureLimit: 2,
	}})
	if want := "rollout canary blue → green: segment, segment phase: rule beta's requests only, no weighted user, failures 0/2"; !strings.Contains(b.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, b.String())
	}
}
