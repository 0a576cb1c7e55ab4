package balancer

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"canaryd/upstream"
)

// Instance is one backend address of a pool: the instance's one record
// (package upstream), which health shares.
type Instance = upstream.Instance

// Router owns the live table. Readers call Load and never wait; writers
// (reloads, availability changes) are serialized by mu, build a new table
// and swap it in. A table is never changed in place; one that differs
// from the last by a route shares every other route with it.
type Router struct {
	table atomic.Pointer[Table]

	mu        sync.Mutex
	specs     map[string]RouteSpec // by route name, as last applied
	applied   bool
	instances map[instanceKey]*Instance
	// dirty routes have an availability change not yet in the table.
	// With a publisher running (Run), SetAvailable only flips the
	// instance and marks its route; the publisher recompiles the marked
	// routes, coalescing bursts, off the caller's goroutine.
	dirty     map[string]bool
	kick      chan struct{}
	running   bool
	published func(routes []*Route)
}

type instanceKey struct{ route, pool, addr string }

// NewRouter returns a router with an empty table (every Match is nil).
func NewRouter() *Router {
	r := &Router{instances: map[instanceKey]*Instance{}, specs: map[string]RouteSpec{}, dirty: map[string]bool{}, kick: make(chan struct{}, 1)}
	r.table.Store(&Table{byName: map[string]int{}})
	return r
}

// Load returns the live table. It is safe for any number of goroutines and
// never blocks.
func (r *Router) Load() *Table { return r.table.Load() }

// Apply builds a table from specs and publishes it. A route whose spec is
// unchanged (and has no availability change pending) is not recompiled:
// the new table shares it. Instances present before keep their state; new
// ones start available, and slow-start (if their pool has it) unless this
// is the first table. It returns the instances that are no longer in any
// route (to drain); on error nothing changes.
func (r *Router) Apply(specs []RouteSpec) (removed []*Instance, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	used := map[instanceKey]*Instance{}
	initial := !r.applied
	now := time.Now().UnixNano()
	get := func(route, pool string, u *url.URL) *Instance {
		k := instanceKey{route, pool, u.String()}
		in := used[k]
		if in == nil {
			if in = r.instances[k]; in == nil {
				in = upstream.New(route, pool, u)
				if !initial {
					in.StartRamp(now) // joins a serving pool: slow start
				}
			}
			used[k] = in
		}
		return in
	}
	old := r.table.Load()
	reuse := func(s RouteSpec) *Route {
		prev, ok := r.specs[s.Name]
		if !ok || r.dirty[s.Name] || !sameSpec(prev, s) {
			return nil
		}
		return old.Route(s.Name)
	}
	t, err := compile(specs, get, reuse)
	if err != nil {
		return nil, err
	}
	for k, in := range r.instances {
		if used[k] == nil {
			removed = append(removed, in)
		}
	}
	r.specs = make(map[string]RouteSpec, len(specs))
	for _, s := range specs {
		r.specs[s.Name] = copySpec(s)
	}
	r.applied = true
	r.instances = used
	clear(r.dirty)
	r.table.Store(t)
	return removed, nil
}

// SetAvailable marks an instance available or not, and reports whether
// that changed anything. A change publishes a table with the route
// recompiled (the pool's share redistributed, panic mode evaluated): at
// once when no publisher runs, else by the publisher, within a
// millisecond. Picks skip an unavailable instance from the moment it is
// marked. An instance that comes back starts its slow start.
func (r *Router) SetAvailable(route, pool, addr string, up bool) (changed bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.instances[instanceKey{route, pool, addr}]
	if in == nil {
		return false, fmt.Errorf("no instance %s in route %q pool %q", addr, route, pool)
	}
	if !in.SetAvailable(up) {
		return false, nil
	}
	r.dirty[route] = true
	if r.running {
		select {
		case r.kick <- struct{}{}:
		default: // a publish is already due; it will see this route too
		}
		return true, nil
	}
	r.publish()
	return true, nil
}

// Run publishes availability changes until ctx ends: SetAvailable then
// returns at once, and this goroutine recompiles the routes it marked,
// one table for a burst. published, if not nil, is told the recompiled
// routes of each table published (for metrics), on this goroutine.
func (r *Router) Run(ctx context.Context, published func(routes []*Route)) {
	r.mu.Lock()
	r.running, r.published = true, published
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.running = false
		r.publish() // nothing marked is left behind
		r.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			r.mu.Lock()
			routes := r.publish()
			cb := r.published
			r.mu.Unlock()
			if cb != nil && len(routes) > 0 {
				cb(routes)
			}
		}
	}
}

// publish recompiles the dirty routes and stores a table sharing every
// other route. r.mu held.
func (r *Router) publish() []*Route {
	if len(r.dirty) == 0 {
		return nil
	}
	t := r.table.Load()
	var done []*Route
	get := func(route, pool string, u *url.URL) *Instance {
		return r.instances[instanceKey{route, pool, u.String()}]
	}
	for name := range r.dirty {
		s, ok := r.specs[name]
		if !ok {
			continue
		}
		rt, err := compileRoute(s, get)
		if err != nil {
			continue // cannot happen: this spec compiled before
		}
		t = t.with(rt)
		done = append(done, rt)
	}
	clear(r.dirty)
	r.table.Store(t)
	return done
}

// copySpec copies what sameSpec compares and a caller could change in
// place afterwards (the pools and their instance lists).
func copySpec(s RouteSpec) RouteSpec {
	s.Pools = slices.Clone(s.Pools)
	for i := range s.Pools {
		s.Pools[i].Instances = slices.Clone(s.Pools[i].Instances)
	}
	s.ForceFrom = slices.Clone(s.ForceFrom)
	return s
}

// sameSpec reports whether two specs compile to the same route: every
// field, the instances by address, the tags by identity.
func sameSpec(a, b RouteSpec) bool {
	if a.Name != b.Name || a.Host != b.Host || a.PathPrefix != b.PathPrefix || a.PreserveHost != b.PreserveHost || a.Policy != b.Policy ||
		a.StickyHeader != b.StickyHeader || a.StickyCookie != b.StickyCookie || a.ForceHeader != b.ForceHeader || a.ForceCookie != b.ForceCookie ||
		a.ForceSecret != b.ForceSecret || a.ForceSecretHeader != b.ForceSecretHeader || a.StickyLow != b.StickyLow ||
		a.MirrorPool != b.MirrorPool || a.MirrorShare != b.MirrorShare || a.MirrorTag != b.MirrorTag || a.Tag != b.Tag ||
		!slices.Equal(a.ForceFrom, b.ForceFrom) || len(a.Pools) != len(b.Pools) {
		return false
	}
	for i := range a.Pools {
		p, q := a.Pools[i], b.Pools[i]
		if p.Name != q.Name || p.Weight != q.Weight || p.PanicThreshold != q.PanicThreshold || p.SlowStart != q.SlowStart ||
			p.Tag != q.Tag || p.Transport != q.Transport || len(p.Instances) != len(q.Instances) {
			return false
		}
		for k := range p.Instances {
			if p.Instances[k].String() != q.Instances[k].String() {
				return false
			}
		}
	}
	return true
}
