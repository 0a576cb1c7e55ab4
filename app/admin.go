package app

import (
	"errors"
	"time"

	"canaryd/admin"
	"canaryd/metrics"
	"canaryd/rollout"
)

// Routes lists the live routes for the admin API.
func (s *Server) Routes() []admin.RouteView {
	var out []admin.RouteView
	for _, r := range s.router.Load().Routes() {
		rv := admin.RouteView{Name: r.Name, Host: r.Host, PathPrefix: r.PathPrefix}
		for _, p := range r.Pools {
			pv := admin.PoolView{Name: p.Name, Weight: float64(p.Weight) / 100, EffectiveWeight: float64(p.Effective) / 100, Panic: p.Panic}
			for _, in := range p.Instances {
				pv.Instances = append(pv.Instances, admin.InstanceView{Addr: in.Addr, Healthy: in.Available(), InFlight: in.InFlight()})
			}
			if st, ok := p.Tag.(*metrics.PoolStats); ok {
				c := st.Last(time.Minute)
				pv.LastMinute = admin.Traffic{
					Requests: c.Requests, Errors: c.Errors, Cancelled: c.Cancelled, ErrorRate: c.ErrorRate(),
					P50Ms: float64(c.Quantile(0.5).Microseconds()) / 1000, P99Ms: float64(c.Quantile(0.99).Microseconds()) / 1000,
				}
			}
			rv.Pools = append(rv.Pools, pv)
		}
		if st, err := s.rollouts.Status(r.Name); err == nil {
			rv.Rollout = &st
		}
		out = append(out, rv)
	}
	return out
}

// Control steers a route's rollout for the admin API.
func (s *Server) Control(route, action string) (*rollout.Status, error) {
	if s.router.Load().Route(route) == nil {
		return nil, admin.ErrUnknownRoute
	}
	st, err := s.rollouts.Control(route, action)
	if errors.Is(err, rollout.ErrNoRollout) {
		return nil, err
	}
	return &st, err
}
