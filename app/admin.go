package app

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"canaryd/config"

	"go.uber.org/zap"

	"canaryd/admin"
	"canaryd/balancer"
	"canaryd/metrics"
	"canaryd/rollout"
)

// Routes lists the live routes for the admin API.
func (s *Server) Routes() []admin.RouteView {
	versions := s.weightVersions()
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
	s.applyMu.Lock()
	v := s.versions[name]
	s.applyMu.Unlock()
	return s.routeView(r, v), true
}

func (s *Server) weightVersions() map[string]int {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	versions := make(map[string]int, len(s.versions))
	for k, v := range s.versions {
		versions[k] = v
	}
	return versions
}

func (s *Server) routeView(r *balancer.Route, version int) admin.RouteView {
	rv := admin.RouteView{Name: r.Name, Host: r.Host, PathPrefix: r.PathPrefix, WeightsVersion: version}
	for _, p := range r.Pools {
		pv := admin.PoolView{Name: p.Name, Weight: float64(p.Weight) / 100, EffectiveWeight: float64(p.Effective) / 100, Panic: p.Panic}
		for _, in := range p.Instances {
			pv.Instances = append(pv.Instances, admin.InstanceView{Addr: in.Addr, Healthy: in.Available(), InFlight: in.InFlight()})
		}
		if st := poolStats(p.Tag); st != nil {
			c := st.Last(time.Minute)
			secs, rate := rateOf(c)
			pv.LastMinute = admin.Traffic{
				Seconds: secs, RatePerSecond: rate,
				Requests: c.Requests, Errors: c.Errors, Cancelled: c.Cancelled, ErrorRate: c.ErrorRate(),
				P50Ms: float64(c.Quantile(0.5).Microseconds()) / 1000, P99Ms: float64(c.Quantile(0.99).Microseconds()) / 1000,
			}
			_, pv.RecentRate = rateOf(st.Last(recentSpan))
			pr := st.Traffic().Preview
			pv.PreviewRequests, pv.PreviewErrors = pr.Requests, pr.Errors
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
func rateOf(c metrics.Counts) (seconds, perSecond float64) {
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

// manualWeights are a route's weights set through the API, with the file's
// weights for it at the time: an edit of those in the file is a newer
// intent and replaces them.
type manualWeights struct {
	weights map[string]int // basis points by pool
	file    map[string]int
}

func fileWeights(r config.Route) map[string]int {
	m := make(map[string]int, len(r.Pools))
	for _, p := range r.Pools {
		m[p.Name] = p.Weight.BasisPoints()
	}
	return m
}

func findRoute(cfg *config.Config, name string) (config.Route, bool) {
	for _, r := range cfg.Routes {
		if r.Name == name {
			return r, true
		}
	}
	return config.Route{}, false
}

// SetWeights sets a route's weights by hand (percent by pool, every pool,
// summing to 100). A route with a rollout refuses: the rollout sets them.
func (s *Server) SetWeights(route string, weights map[string]float64) (admin.WeightsResult, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	r, ok := findRoute(s.cfg, route)
	if !ok {
		return admin.WeightsResult{}, fmt.Errorf("%w: %q", admin.ErrUnknownRoute, route)
	}
	if s.cluster != nil {
		return admin.WeightsResult{}, fmt.Errorf("%w: this canaryd is a member of cluster %q, and weights set by hand would apply to this member only; change the weights in the config file of every member (they must agree), or give the route a rollout", admin.ErrConflict, s.static.Cluster.Name)
	}
	if r.Rollout != nil {
		return admin.WeightsResult{}, fmt.Errorf("%w: route %q has a rollout, which sets the weights of %s and %s in every phase (after an abort or a promotion too); remove the rollout block from the config to set weights by hand", admin.ErrConflict, route, r.Rollout.Stable, r.Rollout.Canary)
	}
	bp := map[string]int{}
	sum := 0
	var names []string
	for _, p := range r.Pools {
		names = append(names, p.Name)
		v, ok := weights[p.Name]
		if !ok {
			return admin.WeightsResult{}, fmt.Errorf("%w: no weight for pool %q; give every pool of the route (%s)", admin.ErrInvalid, p.Name, strings.Join(names, ", "))
		}
		x := v * 100
		if v < 0 || v > 100 || math.Abs(x-math.Round(x)) > 1e-6 {
			return admin.WeightsResult{}, fmt.Errorf("%w: weight %v of pool %q must be 0 to 100 with at most two decimals", admin.ErrInvalid, v, p.Name)
		}
		bp[p.Name] = int(math.Round(x))
		sum += bp[p.Name]
	}
	for k := range weights {
		if _, ok := bp[k]; !ok {
			return admin.WeightsResult{}, fmt.Errorf("%w: route %q has no pool %q", admin.ErrInvalid, route, k)
		}
	}
	if sum != balancer.Slots {
		return admin.WeightsResult{}, fmt.Errorf("%w: weights sum to %s%%, not 100", admin.ErrInvalid, config.Percent(sum))
	}
	s.manual[route] = manualWeights{weights: bp, file: fileWeights(r)}
	specs, err := s.routeSpecs(s.cfg)
	if err == nil {
		_, err = s.router.Apply(specs)
	}
	if err == nil {
		s.retireMirrors(specs)
	}
	if err != nil {
		delete(s.manual, route)
		return admin.WeightsResult{}, err
	}
	s.publishWeights()
	s.versions[route]++
	s.log.Info("weights set by hand", zap.String("route", route), zap.Any("weights", weights), zap.Int("version", s.versions[route]))
	return admin.WeightsResult{Route: route, Weights: weights, Version: s.versions[route]}, nil
}

// reconcileManual drops manual weights that a new config outdates: the
// route is gone, has a rollout now, its pools changed, or the file's
// weights for it changed. applyMu held.
func (s *Server) reconcileManual(next *config.Config) {
	for route, mw := range s.manual {
		why := ""
		r, ok := findRoute(next, route)
		switch {
		case !ok:
			why = "the route is gone"
		case r.Rollout != nil:
			why = "the route has a rollout now"
		case !samePools(mw.weights, r):
			why = "its pools changed"
		case !reflect.DeepEqual(mw.file, fileWeights(r)):
			why = "the file's weights for it changed"
		default:
			continue
		}
		delete(s.manual, route)
		s.log.Info("weights set by hand replaced by the config file", zap.String("route", route), zap.String("because", why))
	}
}

func samePools(w map[string]int, r config.Route) bool {
	if len(w) != len(r.Pools) {
		return false
	}
	for _, p := range r.Pools {
		if _, ok := w[p.Name]; !ok {
			return false
		}
	}
	return true
}

// Series is a route's recent traffic by pool, for the dashboard.
func (s *Server) Series(route string, last, step time.Duration) (map[string][]admin.Point, error) {
	r := s.router.Load().Route(route)
	if r == nil {
		return nil, fmt.Errorf("%w: %q", admin.ErrUnknownRoute, route)
	}
	out := map[string][]admin.Point{}
	for _, p := range r.Pools {
		st := poolStats(p.Tag)
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
