package config

import (
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"canaryd/jsonpath"
)

func (v *validator) rollout(p path, r *Route) {
	ro := r.Rollout
	at := func(k ...any) path { return append(append(path{}, p...), k...) }
	v.rolloutPools(at, r)
	v.segment(at, r)
	prev := Percent(-1)
	for i, w := range ro.Steps {
		if w <= prev {
			v.add(at("steps", i), "%s%% does not rise above the step before it", w)
		}
		prev = w
	}
	if n := len(ro.Steps); n > 0 && ro.Steps[n-1] != Full {
		v.add(at("steps"), "the last step is %s%%; it must be 100", ro.Steps[n-1])
	}
	if ro.Strategy == StrategyBlueGreen && (len(ro.Steps) != 2 || ro.Steps[0] != 0) {
		v.add(at("steps"), "blue_green has no steps of its own (preview at 0, then 100); remove steps")
	}
	if ro.Step <= 0 {
		v.add(at("step"), "must be above 0")
	}
	if ro.Interval.D() < 100*time.Millisecond {
		v.add(at("interval"), "%v is shorter than 100ms", ro.Interval)
	}
	if ro.MinRequests < 1 {
		v.add(at("min_requests"), "must be at least 1: no step is judged on no traffic")
	}
	if ro.FailureLimit < 1 {
		v.add(at("failure_limit"), "must be at least 1")
	}
	if ro.MaxInconclusive < 1 {
		v.add(at("max_inconclusive"), "must be at least 1")
	}
	if t := ro.Tripwire; t.MaxErrorRate <= 0 || t.MaxErrorRate > 1 || t.MinRequests < 1 {
		v.add(at("tripwire"), "max_error_rate must be in (0, 1] and min_requests at least 1")
	}
	if t := ro.Tripwire; !t.Disabled && t.Window.D() < MinTripwireWindow {
		v.add(at("tripwire", "window"), "%v is shorter than %v: the tripwire reads the counters every %v and needs two readings a window apart; use %v or more (default %v), or set tripwire.disabled: true",
			t.Window, MinTripwireWindow, TripwireResolution, MinTripwireWindow, DefaultTripwireWindow)
	}
	if ro.MaxGathering < 1 {
		v.add(at("max_gathering"), "must be at least 1")
	}
	if sh := ro.Shadow; sh != nil {
		if sh.Percent < 1 || sh.Percent > Full {
			v.add(at("shadow", "percent"), "must be from 0.01 to 100")
		}
		if sh.MinRequests < 1 {
			v.add(at("shadow", "min_requests"), "must be at least 1")
		}
		if r := *sh.MaxMismatchRate; r < 0 || r > 1 {
			v.add(at("shadow", "max_mismatch_rate"), "%v is not a rate from 0 to 1", r)
		}
		v.shadowOptions(at("shadow"), &sh.Options)
	}
	v.analysis(at("analysis"), &ro.Analysis)
	v.gates(at, ro)
	v.rollback(at, ro)
	if b := ro.Bake; b != nil && b.Duration.D() < 100*time.Millisecond {
		v.add(at("bake", "duration"), "%v is too short; a bake lasts at least 100ms (e.g. 10m), or remove bake", b.Duration)
	}
	v.notify(at, ro)
	if ro.Webhook.URL != "" {
		if u, err := url.Parse(ro.Webhook.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add(at("webhook", "url"), "%q is not an http(s) URL", ro.Webhook.URL)
		}
	}
	if *ro.Webhook.Retries < 0 || *ro.Webhook.Retries > 10 {
		v.add(at("webhook", "retries"), "%d is not from 0 to 10", *ro.Webhook.Retries)
	}
}

func (v *validator) health(hp path, h *Health) {
	a := h.Active
	ap := append(append(path{}, hp...), "active")
	if a.GRPC && a.Path != "" {
		v.add(append(ap, "path"), "a gRPC probe asks grpc.health.v1.Health/Check, not a path; remove path (or grpc)")
	}
	if a.GRPCService != "" && !a.GRPC {
		v.add(append(ap, "grpc_service"), "is for gRPC probes; set grpc: true too")
	}
	if a.Probing() {
		if a.Path != "" && !strings.HasPrefix(a.Path, "/") {
			v.add(append(ap, "path"), "%q must start with /", a.Path)
		}
		if a.Timeout.D() >= a.Interval.D() || a.Timeout.D() > a.UnhealthyInterval.D() {
			v.add(append(ap, "timeout"), "%v must be shorter than interval (%v) and not longer than unhealthy_interval (%v)", a.Timeout, a.Interval, a.UnhealthyInterval)
		}
		if a.Interval.D() < 100*time.Millisecond || a.UnhealthyInterval.D() < 100*time.Millisecond {
			v.add(append(ap, "interval"), "probe intervals must be at least 100ms")
		}
	}
	if a.Rise < 1 || a.Rise > 100 {
		v.add(append(ap, "rise"), "%d is not from 1 to 100", a.Rise)
	}
	if a.Fall < 1 || a.Fall > 100 {
		v.add(append(ap, "fall"), "%d is not from 1 to 100", a.Fall)
	}
	if lo, hi, err := ParseStatusRange(a.ExpectedStatus); err != nil {
		v.add(append(ap, "expected_status"), "%v", err)
	} else {
		h.Active.statusLo, h.Active.statusHi = lo, hi
	}
	if *a.Jitter < 0 || *a.Jitter > 50 {
		v.add(append(ap, "jitter"), "%d%% is not from 0 to 50", *a.Jitter)
	}
	pp := append(append(path{}, hp...), "passive")
	if *h.Passive.ConsecutiveFailures < 0 {
		v.add(append(pp, "consecutive_failures"), "must be 0 (off) or more")
	}
	if h.Passive.Consecutive5xx < 0 {
		v.add(append(pp, "consecutive_5xx"), "must be 0 (off) or more")
	}
	if h.Passive.MaxEjectFor.D() < h.Passive.EjectFor.D() {
		v.add(append(pp, "max_eject_for"), "%v is shorter than eject_for (%v)", h.Passive.MaxEjectFor, h.Passive.EjectFor)
	}
	if m := *h.Passive.MaxEjectedPercent; m < 0 || m > 100 {
		v.add(append(pp, "max_ejected_percent"), "%d is not from 0 to 100", m)
	}
	if t := *h.PanicThreshold; t < 0 || t > 100 {
		v.add(append(hp, "panic_threshold"), "%d is not from 0 (off) to 100", t)
	}
}

// rolloutPools checks a rollout's strategy and the pools it names.
func (v *validator) rolloutPools(at func(k ...any) path, r *Route) {
	ro := r.Rollout
	switch ro.Strategy {
	case StrategyCanary, StrategyLinear, StrategyBlueGreen:
	default:
		v.add(at("strategy"), "%q is not a strategy; use canary, linear or blue_green", ro.Strategy)
	}
	pools := map[string]bool{}
	for _, pl := range r.Pools {
		pools[pl.Name] = true
	}
	for _, k := range []struct{ key, name string }{{"stable", ro.Stable}, {"canary", ro.Canary}} {
		if k.name == "" {
			v.add(at(k.key), "missing; name the route's %s pool", k.key)
		} else if !pools[k.name] {
			v.add(at(k.key), "%q is not a pool of route %q", k.name, r.Name)
		}
	}
	if ro.Stable != "" && ro.Stable == ro.Canary {
		v.add(at("canary"), "stable and canary are both %q", ro.Stable)
	}
	for _, pl := range r.Pools {
		if pl.Name != ro.Stable && pl.Name != ro.Canary && pl.Weight != 0 {
			v.add(at("stable"), "pool %q has weight %s; in a route with a rollout, pools other than stable and canary must have weight 0", pl.Name, pl.Weight)
		}
	}
}

// analysis checks a rollout's analysis block.
func (v *validator) analysis(p path, a *Analysis) {
	at := func(k ...any) path { return append(append(path{}, p...), k...) }
	if c := a.Confidence; c < 0.5 || c >= 1 {
		v.add(at("confidence"), "%v is not in [0.5, 1)", c)
	}
	if a.MaxErrorRate != nil && (*a.MaxErrorRate < 0 || *a.MaxErrorRate > 1) {
		v.add(at("max_error_rate"), "%v is not a rate from 0 to 1", *a.MaxErrorRate)
	}
	if c := a.CompareToStable; c != nil {
		if c.Confidence < 0.5 || c.Confidence >= 1 {
			v.add(at("compare_to_stable", "confidence"), "%v is not in [0.5, 1)", c.Confidence)
		}
		if c.MaxRatio < 1 {
			v.add(at("compare_to_stable", "max_ratio"), "%v is below 1", c.MaxRatio)
		}
		if *c.MinDifference < 0 || *c.MinDifference > 1 {
			v.add(at("compare_to_stable", "min_difference"), "%v is not a rate from 0 to 1", *c.MinDifference)
		}
	}
	for i, name := range a.DryRun {
		if !slices.Contains(DryRunChecks(), name) {
			v.add(at("dry_run", i), "%q is not a built-in check; use %s (Prometheus checks take dry_run: true)", name, strings.Join(DryRunChecks(), ", "))
		}
	}
	names := map[string]bool{}
	for i := range a.HTTP {
		c := &a.HTTP[i]
		cp := func(k ...any) path { return at(append([]any{"http", i}, k...)...) }
		if c.Name == "" || names[c.Name] {
			v.add(cp("name"), "each check needs a unique name")
		}
		names[c.Name] = true
		if u, err := url.Parse(strings.NewReplacer("{{", "", "}}", "").Replace(c.URL)); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add(cp("url"), "%q is not an http(s) URL", c.URL)
		}
		v.token(cp("method"), c.Method)
		v.headers(func(k ...any) path { return cp(append([]any{"headers"}, k...)...) }, c.Headers)
		p, err := jsonpath.Parse(c.JSONPath)
		switch {
		case c.JSONPath == "":
			v.add(cp("json_path"), "missing; the path of the number in the answer, e.g. $.results[0].series[0].values[0][1]")
		case err != nil:
			v.add(cp("json_path"), "%v", err)
		default:
			c.path = p
		}
		if c.Min == nil && c.Max == nil {
			v.add(cp(), "set min, max or both")
		}
		if c.Missing != MissingHold && c.Missing != MissingFail {
			v.add(cp("missing"), "%q is not hold or fail", c.Missing)
		}
		if c.Timeout.D() < 10*time.Millisecond {
			v.add(cp("timeout"), "%v is too short; use at least 10ms (default %v)", c.Timeout, DefaultPromTimeout)
		}
	}
	if pa := a.Prometheus; pa != nil {
		if u, err := url.Parse(pa.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add(at("prometheus", "url"), "%q is not an http(s) URL", pa.URL)
		}
		if len(pa.Checks) == 0 {
			v.add(at("prometheus", "checks"), "no checks; list at least one query")
		}
		names := map[string]bool{}
		for i, c := range pa.Checks {
			cp := at("prometheus", "checks", i)
			if c.Name == "" || names[c.Name] {
				v.add(append(cp, "name"), "each check needs a unique name")
			}
			names[c.Name] = true
			if strings.TrimSpace(c.Query) == "" {
				v.add(append(cp, "query"), "empty query")
			}
			if c.Min == nil && c.Max == nil {
				v.add(cp, "set min, max or both")
			}
		}
	}
}

// ParseStatusRange reads "200" or "200-399".
func ParseStatusRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi = lo
	var err2 error
	if isRange {
		hi, err2 = strconv.Atoi(strings.TrimSpace(b))
	}
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("%q is not a status or range such as 200 or 200-399", s)
	}
	return lo, hi, nil
}

// gates checks a rollout's gates, and reads their secret and header
// files (a reload picks up rotated ones).
func (v *validator) gates(at func(k ...any) path, ro *Rollout) {
	names := map[string]bool{}
	for i := range ro.Gates {
		g := &ro.Gates[i]
		gp := func(k ...any) path { return at(append([]any{"gates", i}, k...)...) }
		if g.Name == "" || names[g.Name] {
			v.add(gp("name"), "each gate needs a unique name")
		}
		names[g.Name] = true
		switch g.At {
		case GatePreTraffic, GateStep, GatePrePromotion, GateRollback:
		case GatePostPromotion:
			if ro.Bake == nil {
				v.add(gp("at"), "post_promotion gates run during the bake after 100%%; add rollout.bake: { duration: 10m }, or use pre_promotion")
			}
		case "":
			v.add(gp("at"), "missing; use %s", strings.Join(GatePoints(), ", "))
		default:
			v.add(gp("at"), "%q is not a gate point; use %s", g.At, strings.Join(GatePoints(), ", "))
		}
		switch g.Kind {
		case GateHTTP:
			if u, err := url.Parse(g.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				v.add(gp("url"), "%q is not an http(s) URL", g.URL)
			}
			if g.Expires != 0 || g.OnExpiry != "" {
				v.add(gp("expires"), "expires and on_expiry are for approval gates; remove them, or set kind: approval")
			}
		case GateApproval:
			if g.At != GateStep && g.At != GatePrePromotion {
				v.add(gp("at"), "an approval gate waits at step or pre_promotion, not %s", g.At)
			}
			if g.URL != "" || g.Body != "" || len(g.Headers) > 0 || g.SecretFile != "" {
				v.add(gp("url"), "an approval gate calls nothing (a person answers with `canaryd approve`); remove url, body, headers and secret_file")
			}
			if g.DryRun {
				v.add(gp("dry_run"), "an approval cannot be a dry run; remove dry_run, or the gate")
			}
			if g.Expires.D() < time.Second {
				v.add(gp("expires"), "%v is shorter than 1s (default %v)", g.Expires, DefaultApprovalExpires)
			}
			if g.OnExpiry != OnExpiryPause && g.OnExpiry != OnExpiryAbort {
				v.add(gp("on_expiry"), "%q is not pause or abort", g.OnExpiry)
			}
		default:
			v.add(gp("kind"), "%q is not a kind of gate; use http or approval", g.Kind)
		}
		v.token(gp("method"), g.Method)
		if g.Timeout.D() < 10*time.Millisecond {
			v.add(gp("timeout"), "%v is too short; use at least 10ms (default %v)", g.Timeout, DefaultGateTimeout)
		}
		if *g.Retries < 0 || *g.Retries > 10 {
			v.add(gp("retries"), "%d is not from 0 to 10", *g.Retries)
		}
		v.headers(func(k ...any) path { return gp(append([]any{"headers"}, k...)...) }, g.Headers)
		g.secret = v.signingKey(gp("secret_file"), g.SecretFile)
	}
}

// rollback checks how a rollout rolls back.
func (v *validator) rollback(at func(k ...any) path, ro *Rollout) {
	rb := &ro.Rollback
	switch rb.Mode {
	case RollbackInstant, RollbackGradual:
	default:
		v.add(at("rollback", "mode"), "%q is not instant or gradual", rb.Mode)
	}
	prev := Full + 1
	for i, w := range rb.Steps {
		if w >= prev {
			v.add(at("rollback", "steps", i), "%s%% does not fall below the step before it", w)
		}
		prev = w
	}
	if n := len(rb.Steps); n > 0 && rb.Steps[n-1] != 0 {
		v.add(at("rollback", "steps"), "the last step is %s%%; it must be 0", rb.Steps[n-1])
	}
	if rb.Interval.D() < TripwireResolution {
		v.add(at("rollback", "interval"), "%v is shorter than %v (the rollback steps down on the tripwire's clock)", rb.Interval, TripwireResolution)
	}
	if ro.FastRevert != 0 && ro.FastRevert.D() < time.Minute {
		v.add(at("fast_revert"), "%v is shorter than 1m; a window such as 24h, or 0 (off)", ro.FastRevert)
	}
}

// notify checks a rollout's notification receivers, and reads their keys.
func (v *validator) notify(at func(k ...any) path, ro *Rollout) {
	for i := range ro.Notify {
		n := &ro.Notify[i]
		np := func(k ...any) path { return at(append([]any{"notify", i}, k...)...) }
		if u, err := url.Parse(n.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add(np("url"), "%q is not an http(s) URL", n.URL)
		}
		switch n.Format {
		case NotifyJSON, NotifySlack, NotifyTeams:
		default:
			v.add(np("format"), "%q is not a format; use json, slack or teams", n.Format)
		}
		for j, e := range n.Events {
			if !slices.Contains(NotifyEvents(), e) {
				v.add(np("events", j), "%q is not an event; use %s", e, strings.Join(NotifyEvents(), ", "))
			}
		}
		for k := range n.Labels {
			if strings.TrimSpace(k) == "" {
				v.add(np("labels"), "a label needs a name")
			}
		}
		if *n.Retries < 0 || *n.Retries > 10 {
			v.add(np("retries"), "%d is not from 0 to 10", *n.Retries)
		}
		n.secret = v.signingKey(np("secret_file"), n.SecretFile)
	}
}

// signingKey reads the key of an outside request's X-Canary-Signature
// from file ("": unsigned).
func (v *validator) signingKey(p path, file string) string {
	if file == "" {
		return ""
	}
	b, err := os.ReadFile(file)
	switch {
	case err != nil:
		v.add(p, "%v; create the file with a key (e.g. `openssl rand -hex 32 > FILE`), or remove secret_file", err)
	case strings.TrimSpace(string(b)) == "":
		v.add(p, "%s is empty; put a key in it (e.g. `openssl rand -hex 32 > FILE`), or remove secret_file", file)
	}
	return strings.TrimSpace(string(b))
}

// headers checks the headers of an outside request, and reads those kept
// in files.
func (v *validator) headers(at func(k ...any) path, hs map[string]Header) {
	for name, h := range hs {
		v.token(at(name), name)
		if h.File == "" {
			if strings.ContainsAny(h.Value, "\r\n") {
				v.add(at(name), "the value holds a line break")
			}
			continue
		}
		b, err := os.ReadFile(h.File)
		if err != nil {
			v.add(at(name, "file"), "%v; create the file with the header's value, or use value:", err)
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "" || strings.ContainsAny(s, "\r\n") {
			v.add(at(name, "file"), "%s must hold the header's value on one line", h.File)
			continue
		}
		h.fromFile = s
		hs[name] = h
	}
}
