package app

import (
	"fmt"

	"canaryd/balancer"
	"canaryd/config"
	"canaryd/metrics"
	"canaryd/rollout"

	"go.uber.org/zap"
)

// The weights served are composed here, in one place, from three inputs
// that push to it: the config file's weights, the weights an operator set
// through the API (SetWeights), and the override of a route's rollout
// (this member's controller, or in a cluster the leader's state; and a
// partitioned member's fallback to stable). Later inputs win: file, then
// manual, then rollout. Nothing here calls back into its inputs.

// configSpecs compiles a validated config's routes into balancer specs.
func configSpecs(cfg *config.Config) ([]balancer.RouteSpec, error) {
	specs := make([]balancer.RouteSpec, 0, len(cfg.Routes))
	for _, r := range cfg.Routes {
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
		for _, p := range r.Pools {
			h := r.PoolHealth(p)
			ps := balancer.PoolSpec{
				Name: p.Name, Weight: p.Weight.BasisPoints(),
				PanicThreshold: *h.PanicThreshold, SlowStart: h.SlowStart.D(),
			}
			ps.Instances = append(ps.Instances, p.URLs()...)
			s.Pools = append(s.Pools, ps)
		}
		specs = append(specs, s)
	}
	return specs, nil
}

// poolStats is the stats a route or pool of the table carries: routeSpecs
// tags each with its *metrics.PoolStats. The balancer keeps the tag
// untyped (it imports only the standard library and upstream); this is the
// one place that reads it back. nil for an untagged one.
func poolStats(tag any) *metrics.PoolStats {
	st, _ := tag.(*metrics.PoolStats)
	return st
}

// routeSpecs compiles cfg, puts in the weights the rollouts impose, and
// tags each route and pool with its metrics (dropping the metrics of pools
// cfg no longer has).
func (s *Server) routeSpecs(cfg *config.Config) ([]balancer.RouteSpec, error) {
	specs, err := configSpecs(cfg)
	if err != nil {
		return nil, err
	}
	overrides := s.overrides
	keep := map[string][]string{}
	for i := range specs {
		r := &specs[i]
		r.Tag = s.requests.Pool(r.Name, metrics.NoPool)
		o, managed := overrides[r.Name]
		if managed && s.partitioned && o.UnderWay {
			o.CanaryBP, o.Shadowing = 0, false
		}
		s.setMirror(r, &cfg.Routes[i], o, managed)
		if managed {
			r.StickyLow = o.Canary
		}
		hand, byHand := s.manual[r.Name]
		for j := range r.Pools {
			p := &r.Pools[j]
			p.Tag = s.requests.Pool(r.Name, p.Name)
			conn, err := s.connFor(cfg.Routes[i].Pools[j])
			if err != nil {
				return nil, fmt.Errorf("route %q: %w", r.Name, err)
			}
			if conn != nil {
				p.Transport = conn.proxy
			}
			keep[r.Name] = append(keep[r.Name], p.Name)
			if byHand && !managed {
				p.Weight = hand.weights[p.Name]
			}
			if managed {
				switch p.Name {
				case o.Canary:
					p.Weight = o.CanaryBP
				case o.Stable:
					p.Weight = balancer.Slots - o.CanaryBP
				default:
					p.Weight = 0
				}
			}
		}
	}
	s.requests.Retain(keep)
	s.shadows.Retain(keep)
	return specs, nil
}

// SetOverride takes a rollout's new weights (rollout.Sink), from this
// member's controller or, in a cluster, from the leader's state, and
// rebuilds the table. An override older than the one held, or for a route
// whose rollout is gone, is dropped.
func (s *Server) SetOverride(route string, o rollout.Override) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if old, ok := s.overrides[route]; ok && o.Seq <= old.Seq {
		return
	}
	if r, ok := findRoute(s.cfg, route); !ok || r.Rollout == nil {
		return
	}
	s.overrides[route] = o
	if err := s.applyLocked(); err != nil {
		s.log.Error("applying rollout weights failed", zap.String("route", route), zap.Error(err))
	}
}

// applyLocked rebuilds the table from the inputs as they are. applyMu
// held.
func (s *Server) applyLocked() error {
	specs, err := s.routeSpecs(s.cfg)
	if err != nil {
		return err
	}
	if _, err := s.router.Apply(specs); err != nil {
		return err
	}
	s.retireMirrors(specs)
	s.retireConns(specs)
	s.publishWeights()
	return nil
}
