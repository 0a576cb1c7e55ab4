package app

import (
	"fmt"
	"maps"
	"net/http"
	"slices"

	"canaryd/balancer"
	"canaryd/config"
	"canaryd/metrics"
	"canaryd/rollout"
)

// The weights served are composed here, in one place, from three inputs
// that push to the pipeline: the config file's weights, the weights an
// operator set through the API, and the override of a route's rollout
// (this member's controller, or in a cluster the leader's state; and a
// partitioned member's fallback to stable). Later inputs win: file, then
// manual, then rollout. Nothing here calls back into its inputs.

// configSpec compiles a validated route into a balancer spec, with the
// file's weights.
func configSpec(r *config.Route) balancer.RouteSpec {
	s := balancer.RouteSpec{
		Name: r.Name, Host: r.Match.Host, PathPrefix: r.Match.PathPrefix,
		PreserveHost: r.PreservesHost(),
		StickyHeader: r.Sticky.Header, StickyCookie: r.Sticky.Cookie,
		ForceHeader: r.Force.Header, ForceCookie: r.Force.Cookie,
		ForceFrom: r.Force.Allowed(), ForceSecret: r.Force.Secret(), ForceSecretHeader: r.Force.SecretHeader,
	}
	if r.Balance == config.BalanceLeastRequest {
		s.Policy = balancer.LeastRequest
	}
	if r.Sticky.Set {
		s.StickyCookie = "" // canaryd's cookie, not the application's key
		s.Affinity = affinitySpec(&r.Sticky)
	}
	for i := range r.Rules {
		s.Rules = append(s.Rules, ruleSpec(&r.Rules[i]))
	}
	if r.Propagate != nil {
		s.PropagateHeader = r.Propagate.Header
	}
	// Decided here, at reload, so that a route that never closes streams
	// costs its requests nothing.
	s.TrackStreams = r.Rollout != nil && r.Rollout.Rollback.CloseStreamsAfter > 0
	for _, p := range r.Pools {
		h := r.PoolHealth(p)
		ps := balancer.PoolSpec{
			Name: p.Name, Weight: p.Weight.BasisPoints(), Version: p.Version,
			PanicThreshold: *h.PanicThreshold, SlowStart: h.SlowStart.D(),
		}
		ps.Instances = append(ps.Instances, p.URLs()...)
		s.Pools = append(s.Pools, ps)
	}
	return s
}

// specsLocked builds every route of cfg. p.mu held.
func (p *pipeline) specsLocked(cfg *config.Config) ([]balancer.RouteSpec, error) {
	specs := make([]balancer.RouteSpec, 0, len(cfg.Routes))
	for i := range cfg.Routes {
		s, err := p.specLocked(&cfg.Routes[i])
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	return specs, nil
}

// retainLocked drops the records and series of the pools cfg no longer
// has. p.mu held, cfg's table live.
func (p *pipeline) retainLocked(cfg *config.Config) {
	keep := make(map[string][]string, len(cfg.Routes))
	for _, r := range cfg.Routes {
		for _, pl := range r.Pools {
			keep[r.Name] = append(keep[r.Name], pl.Name)
		}
	}
	p.requests.Retain(keep)
	p.shadows.Retain(keep)
}

// retainRoutesLocked is retainLocked for the routes named only (the
// others are as they were). p.mu held.
func (p *pipeline) retainRoutesLocked(cfg *config.Config, routes []string) {
	keep := make(map[string][]string, len(routes))
	for _, name := range routes {
		keep[name] = []string{} // a route gone keeps nothing
		if i, ok := p.byName[name]; ok && i < len(cfg.Routes) {
			for _, pl := range cfg.Routes[i].Pools {
				keep[name] = append(keep[name], pl.Name)
			}
		}
	}
	p.requests.RetainIn(keep)
	p.shadows.RetainIn(keep)
}

// specLocked builds one route: the file's spec, the weights the inputs
// impose, its mirror, its pools' transports, and its records of requests.
// p.mu held.
func (p *pipeline) specLocked(r *config.Route) (balancer.RouteSpec, error) {
	s := configSpec(r)
	s.Stats = p.requests.Pool(r.Name, metrics.NoPool)
	o, managed := p.overrides[r.Name]
	if managed && p.partitioned && o.UnderWay {
		o.CanaryBP, o.Shadowing, o.CanaryLive = 0, false, false
	}
	p.setMirrorLocked(&s, r, o, managed)
	if managed {
		s.StickyLow = o.Canary
	}
	if ro := r.Rollout; ro != nil && ro.Segment != "" {
		// The segment rule goes where the rollout says: the canary while
		// the release is live, stable otherwise (before it, after a
		// rollback, on a partitioned member).
		target := ro.Stable
		if managed {
			target = o.Stable
			if o.CanaryLive {
				target = o.Canary
			}
		}
		for i := range s.Rules {
			if s.Rules[i].Name == ro.Segment {
				s.Rules[i].Pool = target
			}
		}
	}
	hand, byHand := p.manual[r.Name]
	for j := range s.Pools {
		ps := &s.Pools[j]
		ps.Stats = p.requests.Pool(r.Name, ps.Name)
		if managed {
			// A propagated version reaches a rollout's pools even at
			// weight 0: stable always (the rollback target), the canary
			// while the release is live.
			ps.Live = ps.Name == o.Stable || (ps.Name == o.Canary && o.CanaryLive)
		}
		if r.Pools[j].Dynamic() {
			ps.Instances = nil
			if set := p.dynamicLocked(r.Name, r.Pools[j]); set != nil {
				ps.Instances = set.urls
				if set.version != "" {
					ps.Version = set.version
				}
			}
			// A new instance gets traffic once it answers a probe.
			a := r.PoolHealth(r.Pools[j]).Active
			ps.AwaitProbe = a.Path != "" || a.GRPC
		}
		conn, err := p.connForLocked(r.Pools[j])
		if err != nil {
			return balancer.RouteSpec{}, fmt.Errorf("route %q: %w", r.Name, err)
		}
		if conn != nil {
			ps.Transport = conn.proxy
		}
		switch {
		case managed:
			ps.Weight = overrideWeight(o, ps.Name)
		case byHand:
			ps.Weight = hand.weights[ps.Name]
		}
	}
	return s, nil
}

// ruleSpec compiles a validated rule; its conditions go in name order
// (maps have none), so that an unchanged rule compares equal.
func ruleSpec(ru *config.Rule) balancer.RuleSpec {
	return balancer.RuleSpec{
		Name: ru.Name, Pool: ru.Pool, Source: ru.Match.Sources(),
		Headers: stringMatches(ru.Match.Header), Cookies: stringMatches(ru.Match.Cookie), Query: stringMatches(ru.Match.Query),
	}
}

func stringMatches(m map[string]*config.StringMatch) []balancer.StringMatch {
	names := slices.Sorted(maps.Keys(m))
	out := make([]balancer.StringMatch, 0, len(names))
	for _, name := range names {
		c := m[name]
		sm := balancer.StringMatch{Name: name}
		switch {
		case c.Exact != nil:
			sm.Kind, sm.Value = balancer.MatchExact, *c.Exact
		case c.Prefix != nil:
			sm.Kind, sm.Value = balancer.MatchPrefix, *c.Prefix
		case c.Regex != "":
			sm.Kind, sm.Regex = balancer.MatchRegex, c.Compiled()
		default:
			sm.Kind, sm.Values = balancer.MatchIn, c.In
		}
		out = append(out, sm)
	}
	return out
}

// affinitySpec is sticky.set's cookie.
func affinitySpec(st *config.Sticky) *balancer.AffinitySpec {
	a := &balancer.AffinitySpec{Cookie: st.Cookie, TTL: st.TTL.D(), Domain: st.Domain, Path: st.Path, Secret: st.Secret()}
	switch st.Secure {
	case config.SecureAlways:
		a.Secure = balancer.SecureAlways
	case config.SecureNever:
		a.Secure = balancer.SecureNever
	}
	switch st.SameSite {
	case config.SameSiteStrict:
		a.SameSite = http.SameSiteStrictMode
	case config.SameSiteNone:
		a.SameSite = http.SameSiteNoneMode
	default:
		a.SameSite = http.SameSiteLaxMode
	}
	return a
}

// overrideWeight is a pool's weight under a rollout's override.
func overrideWeight(o rollout.Override, pool string) int {
	switch pool {
	case o.Canary:
		return o.CanaryBP
	case o.Stable:
		return balancer.Slots - o.CanaryBP
	}
	return 0
}
