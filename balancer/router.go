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
	kick  chan struct{} // a publish is due (cap 1)

	// mu guards the fields below it.
	mu      sync.Mutex
	specs   map[string]RouteSpec // by route name, as last applied
	applied bool
	// instances are the records in the table, by route: a change of one
	// route looks at that route's only.
	instances map[string]map[upstream.Key]*Instance
	// dirty routes have an availability change not yet in the table.
	// With a publisher running (Run), SetAvailable only flips the
	// instance and marks its route; the publisher recompiles the marked
	// routes, coalescing bursts, off the caller's goroutine.
	dirty     map[string]bool
	running   bool
	published func(routes []*Route)
}

// NewRouter returns a router with an empty table (every Match is nil).
func NewRouter() *Router {
	r := &Router{instances: map[string]map[upstream.Key]*Instance{}, specs: map[string]RouteSpec{}, dirty: map[string]bool{}, kick: make(chan struct{}, 1)}
	r.table.Store(&Table{byName: map[string]int{}})
	return r
}

// Load returns the live table. It is safe for any number of goroutines and
// never blocks.
func (r *Router) Load() *Table { return r.table.Load() }

// instanceSource hands out instance records for one build: the record a
// route already has for a (pool, address), else a new one (slow-starting
// when it joins a serving table). used collects what the build took.
type instanceSource struct {
	r       *Router
	initial bool
	now     int64
	used    map[string]map[upstream.Key]*Instance
}

func (src *instanceSource) get(route, pool string, u *url.URL, awaitProbe bool) *Instance {
	k := upstream.Key{Route: route, Pool: pool, Addr: u.String()}
	m := src.used[route]
	if m == nil {
		m = map[upstream.Key]*Instance{}
		src.used[route] = m
	}
	in := m[k]
	if in == nil {
		if in = src.r.instances[route][k]; in == nil {
			in = upstream.New(route, pool, u)
			if !src.initial {
				in.StartRamp(src.now) // joins a serving pool: slow start
				if awaitProbe {
					// Out until health's first probe passes (health.Sync
					// sees it down and waits for that probe).
					in.SetAvailable(false)
				}
			}
		}
		m[k] = in
	}
	return in
}

// Apply builds a table from specs (every route) and publishes it. A route
// whose spec is unchanged (and has no availability change pending) is not
// recompiled: the new table shares it. Instances present before keep
// their state; new ones start available, and slow-start (if their pool has
// it) unless this is the first table. It returns the instances that are no
// longer in any route (to drain); on error nothing changes.
func (r *Router) Apply(specs []RouteSpec) (removed []*Instance, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	src := &instanceSource{r: r, initial: !r.applied, now: time.Now().UnixNano(), used: map[string]map[upstream.Key]*Instance{}}
	old := r.table.Load()
	reuse := func(s RouteSpec) *Route {
		prev, ok := r.specs[s.Name]
		if !ok || r.dirty[s.Name] || !sameSpec(prev, s) {
			return nil
		}
		return old.Route(s.Name)
	}
	t, err := compile(specs, src.get, reuse)
	if err != nil {
		return nil, err
	}
	for route, ins := range r.instances {
		for k, in := range ins {
			if src.used[route][k] == nil {
				removed = append(removed, in)
			}
		}
	}
	r.specs = make(map[string]RouteSpec, len(specs))
	for _, s := range specs {
		r.specs[s.Name] = copySpec(s)
	}
	r.applied = true
	r.instances = src.used
	clear(r.dirty)
	r.table.Store(t)
	return removed, nil
}

// Update replaces the routes of specs, each by name, in the live table and
// leaves every other route as it is: shared, not recompiled, not even
// looked at, so its cost is that of the routes given, whatever the size of
// the table. A spec equal to the route's last one is skipped. Each route
// must be in the table with the same host and path prefix (a new route or
// a new match needs Apply: the match index changes). It returns the
// instances those routes no longer have; on error nothing changes.
func (r *Router) Update(specs []RouteSpec) (removed []*Instance, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	src := &instanceSource{r: r, initial: !r.applied, now: time.Now().UnixNano(), used: map[string]map[upstream.Key]*Instance{}}
	var routes []*Route
	var done []RouteSpec
	for _, s := range specs {
		prev, ok := r.specs[s.Name]
		switch {
		case !ok:
			return nil, fmt.Errorf("route %q is not in the table (a new route is applied with the whole config)", s.Name)
		case prev.Host != s.Host || prev.PathPrefix != s.PathPrefix:
			return nil, fmt.Errorf("route %q: a new host or path prefix is applied with the whole config", s.Name)
		case !r.dirty[s.Name] && sameSpec(prev, s):
			continue
		}
		rt, err := compileRoute(s, src.get)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", s.Name, err)
		}
		routes, done = append(routes, rt), append(done, s)
	}
	if len(routes) == 0 {
		return nil, nil
	}
	t := r.table.Load()
	for i, rt := range routes {
		name := rt.Name
		for k, in := range r.instances[name] {
			if src.used[name][k] == nil {
				removed = append(removed, in)
			}
		}
		r.instances[name] = src.used[name]
		r.specs[name] = copySpec(done[i])
		delete(r.dirty, name)
		t = t.with(rt)
	}
	r.table.Store(t)
	return removed, nil
}

// SetAvailable marks an instance (a record of the live table) available
// or not, and reports whether that changed anything. A change publishes a
// table with its route recompiled (the pool's share redistributed, panic
// mode evaluated): at once when no publisher runs, else by the publisher,
// within a millisecond. Picks skip an unavailable instance from the moment
// it is marked. An instance that comes back starts its slow start. A
// record no longer in the table changes nothing that is served.
func (r *Router) SetAvailable(in *Instance, up bool) (changed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !in.SetAvailable(up) {
		return false
	}
	if r.instances[in.Route][in.Key()] != in {
		return true // removed from the table: nothing to recompile
	}
	r.dirty[in.Route] = true
	if r.running {
		select {
		case r.kick <- struct{}{}:
		default: // a publish is already due; it will see this route too
		}
		return true
	}
	r.publishLocked()
	return true
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
		r.publishLocked() // nothing marked is left behind
		r.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			// Unlocked by defer: a panic in a compile must not leave the
			// router locked for the deferred publish above.
			routes, cb := func() ([]*Route, func([]*Route)) {
				r.mu.Lock()
				defer r.mu.Unlock()
				return r.publishLocked(), r.published
			}()
			if cb != nil && len(routes) > 0 {
				cb(routes)
			}
		}
	}
}

// publishLocked recompiles the dirty routes and stores a table sharing every
// other route. r.mu held.
func (r *Router) publishLocked() []*Route {
	if len(r.dirty) == 0 {
		return nil
	}
	t := r.table.Load()
	var done []*Route
	get := func(route, pool string, u *url.URL, _ bool) *Instance {
		return r.instances[route][upstream.Key{Route: route, Pool: pool, Addr: u.String()}]
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
	if s.Rules != nil {
		rules := make([]RuleSpec, len(s.Rules))
		for i, r := range s.Rules {
			rules[i] = r.clone()
		}
		s.Rules = rules
	}
	if s.Affinity != nil {
		a := *s.Affinity
		s.Affinity = &a
	}
	return s
}

// sameSpec reports whether two specs compile to the same route: every
// field, the instances by address, the attachments by identity. A field
// left out here is an edit never applied: TestEveryFieldOfASpecIsApplied
// edits each one, found by reflection.
func sameSpec(a, b RouteSpec) bool {
	if a.Name != b.Name || a.Host != b.Host || a.PathPrefix != b.PathPrefix || a.PreserveHost != b.PreserveHost || a.Policy != b.Policy ||
		a.StickyHeader != b.StickyHeader || a.StickyCookie != b.StickyCookie || a.ForceHeader != b.ForceHeader || a.ForceCookie != b.ForceCookie ||
		a.ForceSecret != b.ForceSecret || a.ForceSecretHeader != b.ForceSecretHeader || a.StickyLow != b.StickyLow ||
		a.MirrorPool != b.MirrorPool || a.MirrorShare != b.MirrorShare || a.Mirror != b.Mirror || a.Stats != b.Stats ||
		!slices.Equal(a.ForceFrom, b.ForceFrom) || len(a.Pools) != len(b.Pools) || a.PropagateHeader != b.PropagateHeader || a.TrackStreams != b.TrackStreams ||
		(a.Affinity == nil) != (b.Affinity == nil) || (a.Affinity != nil && *a.Affinity != *b.Affinity) ||
		!slices.EqualFunc(a.Rules, b.Rules, func(x, y RuleSpec) bool { return x.equal(&y) }) {
		return false
	}
	for i := range a.Pools {
		p, q := a.Pools[i], b.Pools[i]
		if p.Name != q.Name || p.Weight != q.Weight || p.PanicThreshold != q.PanicThreshold || p.SlowStart != q.SlowStart ||
			p.Stats != q.Stats || p.Transport != q.Transport || p.AwaitProbe != q.AwaitProbe || len(p.Instances) != len(q.Instances) ||
			p.Version != q.Version || p.Live != q.Live {
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
