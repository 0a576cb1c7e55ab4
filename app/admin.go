package app

import (
	"errors"
	"fmt"
	"time"

	"canaryd/admin"
	"canaryd/balancer"
	"canaryd/evidence"
	"canaryd/rollout"
)

// Routes lists the live routes for the admin API.
func (s *Server) Routes() []admin.RouteView {
	versions := s.pipe.allVersions()
	routes := s.router.Load().Routes()
	out := make([]admin.RouteView, 0, len(routes))
	for _, r := range routes {
		out = append(out, s.routeView(r, versions[r.Name]))
	}
	return out
}

// Route is one live route for the admin API.
func (s *Server) Route(name string) (admin.RouteView, bool) {
	r := s.router.Load().Route(name)
	if r == nil {
		return admin.RouteView{}, false
	}
	return s.routeView(r, s.pipe.version(name)), true
}

func (s *Server) routeView(r *balancer.Route, version int) admin.RouteView {
	rv := admin.RouteView{Name: r.Name, Host: r.Host, PathPrefix: r.PathPrefix, WeightsVersion: version}
	sources := s.pipe.poolSources(r.Name)
	for _, p := range r.Pools {
		pv := admin.PoolView{Name: p.Name, Weight: float64(p.Weight) / 100, EffectiveWeight: float64(p.Effective) / 100, Panic: p.Panic,
			Version: sources[p.Name].version, Source: sources[p.Name].source}
		for _, in := range p.Instances {
			iv := admin.InstanceView{Addr: in.Addr, Healthy: in.Available(), InFlight: in.InFlight()}
			if !iv.Healthy {
				iv.Why = s.checker.Why(in)
			}
			pv.Instances = append(pv.Instances, iv)
		}
		if st := p.Stats; st != nil {
			c := st.Last(time.Minute)
			secs, rate := rateOf(c)
			pv.LastMinute = admin.Traffic{
				Seconds: secs, RatePerSecond: rate,
				Requests: c.Requests, Errors: c.Errors, Cancelled: c.Cancelled, ErrorRate: c.ErrorRate(),
				P50Ms: float64(c.Quantile(0.5).Microseconds()) / 1000, P99Ms: float64(c.Quantile(0.99).Microseconds()) / 1000,
			}
			_, pv.RecentRate = rateOf(st.Last(recentSpan))
			t := st.Traffic()
			pv.PreviewRequests, pv.PreviewErrors = t.Preview.Requests, t.Preview.Errors
			sh := s.ShadowTraffic(r.Name, p.Name).Copies
			pv.Traffic = admin.ByClass{
				Weighted:   admin.Count{Requests: t.Weighted.Requests, Errors: t.Weighted.Errors},
				Targeted:   admin.Count{Requests: t.Targeted.Requests + t.Propagated.Requests, Errors: t.Targeted.Errors + t.Propagated.Errors},
				Propagated: admin.Count{Requests: t.Propagated.Requests, Errors: t.Propagated.Errors},
				Preview:    admin.Count{Requests: t.Preview.Requests, Errors: t.Preview.Errors},
				Shadow:     admin.Count{Requests: sh.Requests, Errors: sh.Errors},
			}
		}
		rv.Pools = append(rv.Pools, pv)
	}
	if st, err := s.rollouts.Status(r.Name); err == nil {
		rv.Rollout = &st
	}
	return rv
}

// recentSpan is what "now" means for a pool's request rate.
const recentSpan = 10 * time.Second

// rateOf is the span a reading covers and its requests per second. The
// span is the reading's own (shorter than asked while the pool's stats
// are young), and at least a second, so a first request is not a burst.
func rateOf(c evidence.Counts) (seconds, perSecond float64) {
	seconds = c.To.Sub(c.From).Seconds()
	return seconds, float64(c.Requests) / max(seconds, 1)
}

// Control steers a route's rollout for the admin API.
func (s *Server) Control(route string, action rollout.Action) (*rollout.Status, error) {
	if s.router.Load().Route(route) == nil {
		return nil, admin.ErrUnknownRoute
	}
	var st rollout.Status
	var err error
	if s.cluster != nil {
		st, err = s.clusterControl(route, action)
	} else {
		st, err = s.rollouts.Control(route, action)
	}
	if errors.Is(err, rollout.ErrNoRollout) {
		return nil, err
	}
	return &st, err
}

// Approve gives a person's go-ahead to a route's pending approval gate,
// for the admin API.
func (s *Server) Approve(route string, a rollout.Approval) (*rollout.Status, error) {
	if s.router.Load().Route(route) == nil {
		return nil, admin.ErrUnknownRoute
	}
	var st rollout.Status
	var err error
	if s.cluster != nil {
		st, err = s.clusterApprove(route, a)
	} else {
		st, err = s.rollouts.Approve(route, a)
	}
	if errors.Is(err, rollout.ErrNoRollout) {
		return nil, err
	}
	return &st, err
}

// SetWeights sets a route's weights by hand (percent by pool, every pool,
// summing to 100). A route with a rollout refuses: the rollout sets them.
func (s *Server) SetWeights(route string, weights map[string]float64) (admin.WeightsResult, error) {
	return s.pipe.setManual(route, weights)
}

// Series is a route's recent traffic by pool, for the dashboard.
func (s *Server) Series(route string, last, step time.Duration) (map[string][]admin.Point, error) {
	r := s.router.Load().Route(route)
	if r == nil {
		return nil, fmt.Errorf("%w: %q", admin.ErrUnknownRoute, route)
	}
	out := map[string][]admin.Point{}
	for _, p := range r.Pools {
		st := p.Stats
		if st == nil {
			continue
		}
		series := st.Series(last, step)
		if s.cluster != nil {
			// A rollout under way: the whole cluster's traffic, as the
			// leader's analysis judges it.
			if cs, ok := s.cluster.Series(route, p.Name, last, step); ok {
				series = cs
			}
		}
		pts := []admin.Point{}
		for _, pt := range series {
			ap := admin.Point{At: pt.At, HasTraffic: pt.Requests > 0}
			if secs := pt.Span.Seconds(); secs > 0 {
				ap.RPS = float64(pt.Requests) / secs
			}
			if pt.Requests > 0 {
				ap.ErrorRate = float64(pt.Errors) / float64(pt.Requests)
				ap.P99Ms = float64(pt.P99.Microseconds()) / 1000
			}
			pts = append(pts, ap)
		}
		out[p.Name] = pts
	}
	return out, nil
}
