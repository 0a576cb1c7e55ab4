package app

import (
	"reflect"
	"slices"
	"sync"

	"canaryd/balancer"
	"canaryd/config"
	"canaryd/evidence"
	"canaryd/metrics"
	"canaryd/panics"
	"canaryd/proxy"
	"canaryd/rollout"
)

// mirrorEntry is a route's running mirror and the settings it was made
// with: a build that asks for the same settings reuses it. The settings
// are compared whole (reflect.DeepEqual), so no field can be left out of
// the comparison.
type mirrorEntry struct {
	pool string
	opts proxy.MirrorOptions // without OnPanic: a func compares unequal
	m    *proxy.Mirror
}

// mirrorFor is the mirror a route's requests go to now: its rollout's
// shadow phase (copies to the canary), else its mirror block; ok false
// when it mirrors nothing.
func mirrorFor(r *config.Route, o rollout.Override, managed bool) (pool string, share int, opts config.ShadowOptions, ok bool) {
	if managed && o.Shadowing && r.Rollout != nil && r.Rollout.Shadow != nil {
		sh := r.Rollout.Shadow
		return o.Canary, sh.Percent.BasisPoints(), sh.Options, true
	}
	if m := r.Mirror; m != nil {
		return m.Pool, m.Percent.BasisPoints(), m.Options, true
	}
	return "", 0, config.ShadowOptions{}, false
}

// setMirrorLocked points a route spec at its mirror, starting one when
// the settings are new; a route that mirrors nothing now retires its
// mirror. p.mu held.
func (p *pipeline) setMirrorLocked(spec *balancer.RouteSpec, r *config.Route, o rollout.Override, managed bool) {
	e := p.mirrors[r.Name]
	pool, share, opts, ok := mirrorFor(r, o, managed)
	if !ok {
		if e != nil {
			p.retired = append(p.retired, e.m)
			delete(p.mirrors, r.Name)
		}
		return
	}
	po := proxy.MirrorOptions{
		Methods: opts.Methods, MaxBodyBytes: opts.MaxBodyBytes, Header: opts.Header,
		Queue: opts.Queue, Concurrency: opts.Concurrency, Timeout: opts.Timeout.D(),
		CompareHeaders: slices.Contains(opts.Compare, config.CompareHeaders),
		CompareBody:    slices.Contains(opts.Compare, config.CompareBody),
		IgnoreHeaders:  opts.IgnoreHeaders, CompareMaxBytes: opts.CompareMaxBytes,
		PreserveHost: r.PreservesHost(),
	}
	if e == nil || e.pool != pool || !reflect.DeepEqual(e.opts, po) {
		if e != nil {
			p.retired = append(p.retired, e.m)
		}
		withPanic := po
		withPanic.OnPanic = p.onPanic
		e = &mirrorEntry{pool: pool, opts: po, m: proxy.NewMirror(withPanic, p.transport, shadowOutcomes{p.shadows}, p.log.Named("shadow"))}
		p.mirrors[r.Name] = e
	}
	spec.MirrorPool, spec.MirrorShare, spec.Mirror = pool, share, e.m
}

// retireMirrorsLocked closes the mirrors the table just applied no longer
// uses (copies still queued for them are dropped and counted): those
// setMirrorLocked replaced, and with a new config cfg those of the routes
// it no longer has. p.mu held.
func (p *pipeline) retireMirrorsLocked(cfg *config.Config) {
	if cfg != nil {
		for name, e := range p.mirrors {
			if _, ok := p.byName[name]; !ok {
				p.retired = append(p.retired, e.m)
				delete(p.mirrors, name)
			}
		}
	}
	for _, m := range p.retired {
		p.background.Add(1)
		go func() { // never under the table's lock
			defer p.background.Done()
			panics.Guard(p.onPanic, "mirror close", m.Close)
		}()
	}
	p.retired = p.retired[:0]
}

// closeMirrors stops every mirror (at shutdown).
func (p *pipeline) closeMirrors() {
	p.mu.Lock()
	defer p.mu.Unlock()
	var wg sync.WaitGroup
	for name, e := range p.mirrors {
		wg.Add(1)
		go func() { defer wg.Done(); panics.Guard(p.onPanic, "mirror close", e.m.Close) }()
		delete(p.mirrors, name)
	}
	wg.Wait()
}

// shadowOutcomes is the mirrors' observer: it feeds the shadow metrics and
// the counts a rollout's shadow phase judges.
type shadowOutcomes struct{ shadows *metrics.Shadows }

func (o shadowOutcomes) ObserveShadow(out *proxy.ShadowOutcome) {
	st := o.shadows.Pool(out.Route.Name, out.Pool.Name)
	if out.Dropped {
		st.Dropped()
		return
	}
	st.Observe(out.Status, out.Duration, out.PrimaryStatus, out.PrimaryDuration, out.Err != nil, out.Compared, out.Mismatch)
}

// ShadowTraffic is the shadow traffic a route sends to a pool (for
// rollouts).
func (s *Server) ShadowTraffic(route, pool string) evidence.Shadow {
	return s.shadows.Pool(route, pool).Shadow()
}
