package adminclient

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"canaryd/admin"
	"canaryd/rollout"
)

// WriteCluster shows the leader, the members and what each serves: the
// sequence of each route's state it acknowledged, against the latest.
func WriteCluster(w io.Writer, v admin.ClusterView) {
	conn := "connected"
	switch {
	case v.Partitioned:
		conn = "PARTITIONED (past partition_timeout)"
	case !v.Connected:
		conn = "NOT CONNECTED to etcd"
	}
	leader := v.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(w, "cluster %s: member %s, leader %s, %s, %d members\n", v.Name, v.Member, leader, conn, len(v.Members))
	for _, m := range v.Members {
		var acks []string
		for route, seq := range v.States {
			state := "behind"
			if m.Acked[route] >= seq {
				state = "current"
			}
			acks = append(acks, fmt.Sprintf("%s %s", route, state))
		}
		sort.Strings(acks)
		role := "follower"
		if m.ID == v.Leader {
			role = "leader"
		}
		fmt.Fprintf(w, "  %-20s %-8s %-21s config %s  %s\n", m.ID, role, m.Addr, m.ConfigHash, strings.Join(acks, ", "))
	}
}

// WriteRoute shows a route as `canaryd status` prints it: each pool's
// weight, health, rate and errors, and the rollout with its last verdicts.
func WriteRoute(w io.Writer, r admin.RouteView) {
	fmt.Fprintf(w, "route %s (%s%s)\n", r.Name, r.Host, r.PathPrefix)
	for _, p := range r.Pools {
		healthy := 0
		for _, in := range p.Instances {
			if in.Healthy {
				healthy++
			}
		}
		bar := strings.Repeat("#", int(p.Weight/5+0.5)) + strings.Repeat(".", 20-int(p.Weight/5+0.5))
		// The classes besides weighted, when the pool has any.
		preview := ""
		for _, c := range []struct {
			name string
			n    admin.Count
		}{{"targeted", p.Traffic.Targeted}, {"preview", p.Traffic.Preview}, {"shadow", p.Traffic.Shadow}} {
			if c.n.Requests > 0 {
				preview += fmt.Sprintf("  %d %s (%d failed)", c.n.Requests, c.name, c.n.Errors)
			}
		}
		// What the pool serves when health has moved its share: a pool at
		// 50% with no healthy instance serves 0%.
		serving := ""
		if p.EffectiveWeight != p.Weight {
			serving = fmt.Sprintf(" serving %.2f%%", p.EffectiveWeight)
		}
		name := p.Name
		if p.Version != "" {
			name += " " + p.Version
		}
		fmt.Fprintf(w, "  %-10s %6.2f%%%s [%s] %d/%d healthy  %5.1f req/s now  last %s: %5.2f%% errors  p99 %.1fms%s\n",
			name, p.Weight, serving, bar, healthy, len(p.Instances), p.RecentRate, span(p.LastMinute.Seconds), 100*p.LastMinute.ErrorRate, p.LastMinute.P99Ms, preview)
		writeOut(w, p)
	}
	if ro := r.Rollout; ro != nil {
		next := ""
		if !ro.NextAnalysis.IsZero() {
			next = fmt.Sprintf(", next analysis in %v", time.Until(ro.NextAnalysis).Round(time.Second))
		}
		if ro.Shadow {
			fmt.Fprintf(w, "  rollout %s %s → %s: %s, shadow phase: copies of %.2f%% of requests, no live traffic, failures %d/%d%s\n",
				ro.Strategy, versioned(ro.Stable, ro.StableVersion), versioned(ro.Canary, ro.CanaryVersion), ro.Phase, ro.ShadowPercent, ro.Failures, ro.FailureLimit, next)
		} else if ro.InSegment {
			fmt.Fprintf(w, "  rollout %s %s → %s: %s, segment phase: rule %s's requests only, no weighted user, failures %d/%d%s\n",
				ro.Strategy, versioned(ro.Stable, ro.StableVersion), versioned(ro.Canary, ro.CanaryVersion), ro.Phase, ro.Segment, ro.Failures, ro.FailureLimit, next)
		} else {
			fmt.Fprintf(w, "  rollout %s %s → %s: %s, step %d of %d (canary %.2f%%), failures %d/%d%s\n",
				ro.Strategy, versioned(ro.Stable, ro.StableVersion), versioned(ro.Canary, ro.CanaryVersion), ro.Phase, ro.Step, len(ro.Steps), ro.CanaryWeight, ro.Failures, ro.FailureLimit, next)
		}
		if ro.Reason != "" {
			fmt.Fprintf(w, "    %s\n", ro.Reason)
		}
		if e := ro.Estimate; e != nil {
			fmt.Fprintf(w, "    until a decision: %s\n", e.Text)
		}
		if !ro.BakeUntil.IsZero() {
			fmt.Fprintf(w, "    baking at 100%% until %s (in %v); %s stays configured to revert to\n", ro.BakeUntil.Local().Format(time.TimeOnly),
				time.Until(ro.BakeUntil).Round(time.Second), ro.Stable)
		}
		if g := ro.Gate; g != nil {
			if len(g.Pending) > 0 {
				fmt.Fprintf(w, "    waiting for the approval of %s (%s) for %v: canaryd approve %s --gate NAME --by YOU --reason WHY\n",
					strings.Join(g.Pending, ", "), g.At, time.Since(g.PendingSince).Round(time.Second), r.Name)
			} else {
				fmt.Fprintf(w, "    waiting on %s gates %s for %v\n", g.At, strings.Join(g.Gates, ", "), time.Since(g.Since).Round(time.Second))
			}
			writeVerdicts(w, g.Verdicts)
		}
		writeVerdicts(w, ro.LastVerdicts)
	}
}

// writeOut says why a pool's instances are out of rotation, one line per
// reason: "2 of 2 v1 instances out: active: 3 probes in a row failed;
// last: GET /healthz: status 404…".
func writeOut(w io.Writer, p admin.PoolView) {
	var reasons []string
	count := map[string]int{}
	for _, in := range p.Instances {
		if in.Healthy {
			continue
		}
		why := in.Why
		if why == "" {
			why = "out of rotation"
		}
		if count[why] == 0 {
			reasons = append(reasons, why)
		}
		count[why]++
	}
	for _, why := range reasons {
		noun := "instances"
		if len(p.Instances) == 1 {
			noun = "instance"
		}
		fmt.Fprintf(w, "    %d of %d %s %s out: %s\n", count[why], len(p.Instances), p.Name, noun, why)
	}
}

// span names the time a reading covers: "1m", or "16s" for a young pool.
func span(seconds float64) string {
	if seconds >= 59.5 {
		return "1m"
	}
	return fmt.Sprintf("%.0fs", seconds)
}

// versioned is a pool's name with its version: "green (v2.4.0)".
func versioned(pool, version string) string {
	if version == "" {
		return pool
	}
	return pool + " (" + version + ")"
}

// writeVerdicts prints one line a verdict.
func writeVerdicts(w io.Writer, vs []rollout.Verdict) {
	for _, v := range vs {
		result := string(v.Result)
		switch {
		case v.DryRun:
			result += " (dry run)"
		case v.Advisory:
			result += " (advisory)"
		}
		fmt.Fprintf(w, "    %-13s %-20s %s\n", result, v.Check, v.Reason)
	}
}
