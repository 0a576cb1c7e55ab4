package app

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"canaryd/admin"
	"canaryd/balancer"
	"canaryd/config"
)

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

// setManual sets a route's weights by hand (percent by pool, every pool,
// summing to 100), and rebuilds that route. A route with a rollout
// refuses: the rollout sets them.
func (p *pipeline) setManual(route string, weights map[string]float64) (admin.WeightsResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.routeLocked(route)
	if !ok {
		return admin.WeightsResult{}, fmt.Errorf("%w: %q", admin.ErrUnknownRoute, route)
	}
	if p.clustered {
		return admin.WeightsResult{}, fmt.Errorf("%w: this canaryd is a member of cluster %q, and weights set by hand would apply to this member only; change the weights in the config file of every member (they must agree), or give the route a rollout", admin.ErrConflict, p.static.Cluster.Name)
	}
	if r.Rollout != nil {
		return admin.WeightsResult{}, fmt.Errorf("%w: route %q has a rollout, which sets the weights of %s and %s in every phase (after an abort or a promotion too); to set weights by hand, write the weights served (canaryd status) in the file's pools and remove the rollout block", admin.ErrConflict, route, r.Rollout.Stable, r.Rollout.Canary)
	}
	names := make([]string, 0, len(r.Pools))
	for _, pl := range r.Pools {
		names = append(names, pl.Name)
	}
	// A pool the route does not have is the first thing to say: it is
	// the typo (v3 for v2), and the pools missing follow from it.
	var unknown []string
	for k := range weights {
		if !slices.Contains(names, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		for i, u := range unknown {
			unknown[i] = strconv.Quote(u)
		}
		return admin.WeightsResult{}, fmt.Errorf("%w: route %q has no pool %s; its pools are %s", admin.ErrInvalid, route, strings.Join(unknown, ", "), strings.Join(names, ", "))
	}
	bp := map[string]int{}
	sum := 0
	for _, pl := range r.Pools {
		v, ok := weights[pl.Name]
		if !ok {
			return admin.WeightsResult{}, fmt.Errorf("%w: no weight for pool %q; give every pool of the route (%s)", admin.ErrInvalid, pl.Name, strings.Join(names, ", "))
		}
		x := v * 100
		if v < 0 || v > 100 || math.Abs(x-math.Round(x)) > 1e-6 {
			return admin.WeightsResult{}, fmt.Errorf("%w: weight %v of pool %q must be 0 to 100 with at most two decimals", admin.ErrInvalid, v, pl.Name)
		}
		bp[pl.Name] = int(math.Round(x))
		sum += bp[pl.Name]
	}
	if sum != balancer.Slots {
		return admin.WeightsResult{}, fmt.Errorf("%w: weights sum to %s%%, not 100", admin.ErrInvalid, config.Percent(sum))
	}
	p.manual[route] = manualWeights{weights: bp, file: fileWeights(*r)}
	if _, err := p.applyLocked(change{routes: []string{route}}); err != nil {
		delete(p.manual, route)
		return admin.WeightsResult{}, err
	}
	p.versions[route]++
	p.log.Info("weights set by hand", zap.String("route", route), zap.Any("weights", weights), zap.Int("version", p.versions[route]))
	return admin.WeightsResult{Route: route, Weights: weights, Version: p.versions[route]}, nil
}

// reconcileManualLocked drops manual weights that a new config outdates:
// the route is gone, has a rollout now, its pools changed, or the file's
// weights for it changed. p.mu held.
func (p *pipeline) reconcileManualLocked(next *config.Config) {
	byName := routeIndex(next)
	for route, mw := range p.manual {
		why := ""
		i, ok := byName[route]
		var r config.Route
		if ok {
			r = next.Routes[i]
		}
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
		delete(p.manual, route)
		p.log.Info("weights set by hand replaced by the config file", zap.String("route", route), zap.String("because", why))
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

// warnManagedWeightsLocked says so when a file edits the weights of pools
// that a running rollout owns: those edits are not applied
// (docs/rollouts.md). p.mu held.
func (p *pipeline) warnManagedWeightsLocked(next *config.Config) {
	for _, r := range next.Routes {
		if r.Rollout == nil {
			continue
		}
		old, ok := p.routeLocked(r.Name)
		if !ok || old.Rollout == nil {
			continue
		}
		was := map[string]config.Percent{}
		for _, pl := range old.Pools {
			was[pl.Name] = pl.Weight
		}
		for _, pl := range r.Pools {
			if w, ok := was[pl.Name]; ok && w != pl.Weight && (pl.Name == r.Rollout.Stable || pl.Name == r.Rollout.Canary) {
				p.log.Warn("weight edit not applied: the route's rollout sets its stable and canary weights in every phase (after an abort or a promotion too); to set weights by hand, write the weights served (canaryd status) in the file's pools and remove the rollout block",
					zap.String("route", r.Name), zap.String("pool", pl.Name), zap.String("file_weight", pl.Weight.String()))
			}
		}
	}
}

// checkRolloutRemovalLocked refuses a config that removes a route's
// rollout block while the weights served differ from the file's: the
// file's would apply at once and move traffic nobody asked to move (after
// a promotion, back to the old pool that is about to be deleted; after a
// rollback, back to the canary). The file stays the one truth, and a
// restart serves what it says, so the refusal asks for the served weights
// to be written in the file first (or in the same edit). p.mu held.
func (p *pipeline) checkRolloutRemovalLocked(next *config.Config) error {
	t := p.router.Load()
	var problems []string
	for _, r := range next.Routes {
		old, ok := p.routeLocked(r.Name)
		live := t.Route(r.Name)
		if !ok || old.Rollout == nil || r.Rollout != nil || live == nil {
			continue
		}
		file := fileWeights(r)
		moves := false
		var served, write []string
		servedBy := map[string]bool{}
		for _, pl := range live.Pools {
			servedBy[pl.Name] = true
			served = append(served, pl.Name+"="+config.Percent(pl.Weight).String())
			if _, kept := file[pl.Name]; kept {
				write = append(write, pl.Name+": "+config.Percent(pl.Weight).String())
			}
			moves = moves || file[pl.Name] != pl.Weight
		}
		for name, w := range file {
			if !servedBy[name] && w != 0 {
				moves = true // a new pool the file gives traffic
			}
		}
		if moves {
			problems = append(problems, fmt.Sprintf("route %q: removing its rollout block would move traffic from the weights served (%s) to the file's; set the file's weights to %s first, or in the same edit",
				r.Name, strings.Join(served, " "), strings.Join(write, ", ")))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
