package app

import (
	"canaryd/panics"
	"fmt"
	"slices"
	"sync"

	"canaryd/balancer"
	"canaryd/config"
	"canaryd/metrics"
	"canaryd/proxy"
	"canaryd/rollout"
)

// mirrorEntry is a route's running mirror and the settings it was made
// with: a table build that asks for the same settings reuses it.
type mirrorEntry struct {
	key string
	m   *proxy.Mirror
}

// mirrorFor is the mirror a route's requests go to now: its rollout's
// shadow phase (copies to the canary), else its mirror block; ok false
// when it mirrors nothing.
func mirrorFor(r *config.Route, o rollout.Override, managed bool) (pool string, share int, opts config.MirrorOptions, ok bool) {
	if managed && o.Shadowing && r.Rollout != nil && r.Rollout.Shadow != nil {
		sh := r.Rollout.Shadow
		return o.Canary, sh.Percent.BasisPoints(), sh.Options, true
	}
	if m := r.Mirror; m != nil {
		return m.Pool, m.Percent.BasisPoints(), m.Shadow, true
	}
	return "", 0, config.MirrorOptions{}, false
}

// setMirror points a route spec at its mirror, starting one when the
// settings are new. applyMu held.
func (s *Server) setMirror(spec *balancer.RouteSpec, r *config.Route, o rollout.Override, managed bool) {
	pool, share, opts, ok := mirrorFor(r, o, managed)
	if !ok {
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
	key := fmt.Sprintf("%s %+v", pool, po)
	po.OnPanic = s.panicked // after the key: a func has no stable text
	e := s.mirrors[r.Name]
	if e == nil || e.key != key {
		if e != nil {
			s.retired = append(s.retired, e.m)
		}
		e = &mirrorEntry{key: key, m: proxy.NewMirror(po, s.transport, shadowOutcomes{s}, s.log.Named("shadow"))}
		s.mirrors[r.Name] = e
	}
	spec.MirrorPool, spec.MirrorShare, spec.MirrorTag = pool, share, e.m
}

// retireMirrors closes the mirrors the table just applied no longer uses
// (copies still queued for them are dropped and counted). applyMu held.
func (s *Server) retireMirrors(specs []balancer.RouteSpec) {
	used := map[*proxy.Mirror]bool{}
	for _, sp := range specs {
		if m, ok := sp.MirrorTag.(*proxy.Mirror); ok {
			used[m] = true
		}
	}
	for name, e := range s.mirrors {
		if !used[e.m] {
			s.retired = append(s.retired, e.m)
			delete(s.mirrors, name)
		}
	}
	for _, m := range s.retired {
		if !used[m] {
			s.background.Add(1)
			go func() { // never under the table's lock
				defer s.background.Done()
				panics.Guard(s.panicked, "mirror close", m.Close)
			}()
		}
	}
	s.retired = s.retired[:0]
}

// closeMirrors stops every mirror (at shutdown).
func (s *Server) closeMirrors() {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	var wg sync.WaitGroup
	for name, e := range s.mirrors {
		wg.Add(1)
		go func() { defer wg.Done(); panics.Guard(s.panicked, "mirror close", e.m.Close) }()
		delete(s.mirrors, name)
	}
	wg.Wait()
}

// shadowOutcomes is the mirrors' observer: it feeds the shadow metrics and
// the counts a rollout's shadow phase judges.
type shadowOutcomes struct{ s *Server }

func (o shadowOutcomes) ObserveShadow(out *proxy.ShadowOutcome) {
	st := o.s.shadows.Pool(out.Route.Name, out.Pool.Name)
	if out.Dropped {
		st.Dropped()
		return
	}
	st.Observe(out.Status, out.Duration, out.PrimaryStatus, out.PrimaryDuration, out.Err != nil, out.Compared, out.Mismatch)
}

// ShadowTraffic is the shadow traffic a route sends to a pool (for
// rollouts).
func (s *Server) ShadowTraffic(route, pool string) metrics.Shadow {
	return s.shadows.Pool(route, pool).Shadow()
}
