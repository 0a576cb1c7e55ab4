package balancer

import (
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Instance is one backend address of a pool. It outlives tables: a reload
// that keeps the instance keeps its availability and in-flight count.
type Instance struct {
	Route string
	Pool  string
	// URL is the target; canonical (see config.ParseInstance), never changed.
	URL *url.URL
	// Addr is URL.String(), the instance's name in logs and metrics.
	Addr string

	down atomic.Bool
	// rampStart is when the instance last became available (unix ns), for
	// slow start; 0 once ramped up or when it never needed to.
	rampStart atomic.Int64
	_         [48]byte
	inflight  atomic.Int64
	_         [56]byte
}

// Available reports whether picks may choose the instance.
func (in *Instance) Available() bool { return !in.down.Load() }

// InFlight is the number of requests the instance is serving now.
func (in *Instance) InFlight() int64 { return in.inflight.Load() }

// Acquire and Release count a request in flight on the instance.
func (in *Instance) Acquire() { in.inflight.Add(1) }

// Release ends what Acquire began.
func (in *Instance) Release() { in.inflight.Add(-1) }

// Router owns the live table. Readers call Load and never wait; writers
// (reloads, availability changes) are serialized by mu, build a whole new
// table and swap it in.
type Router struct {
	table atomic.Pointer[Table]

	mu        sync.Mutex
	specs     []RouteSpec
	instances map[instanceKey]*Instance
}

type instanceKey struct{ route, pool, addr string }

// NewRouter returns a router with an empty table (every Match is nil).
func NewRouter() *Router {
	r := &Router{instances: map[instanceKey]*Instance{}}
	r.table.Store(&Table{byName: map[string]*Route{}})
	return r
}

// Load returns the live table. It is safe for any number of goroutines and
// never blocks.
func (r *Router) Load() *Table { return r.table.Load() }

// Apply builds a table from specs and publishes it. Instances present before
// keep their state; new ones start available, and slow-start (if their pool
// has it) unless this is the first table. It returns the instances that
// are no longer in any route (to drain); on error nothing changes.
func (r *Router) Apply(specs []RouteSpec) (removed []*Instance, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	used := map[instanceKey]*Instance{}
	initial := r.specs == nil
	now := time.Now().UnixNano()
	get := func(route, pool string, u *url.URL) *Instance {
		k := instanceKey{route, pool, u.String()}
		in := used[k]
		if in == nil {
			if in = r.instances[k]; in == nil {
				in = &Instance{Route: route, Pool: pool, URL: u, Addr: k.addr}
				if !initial {
					in.rampStart.Store(now) // joins a serving pool: slow start
				}
			}
			used[k] = in
		}
		return in
	}
	t, err := compile(specs, get)
	if err != nil {
		return nil, err
	}
	for k, in := range r.instances {
		if used[k] == nil {
			removed = append(removed, in)
		}
	}
	r.specs = append([]RouteSpec(nil), specs...)
	r.instances = used
	r.table.Store(t)
	return removed, nil
}

// SetAvailable marks an instance available or not. Only a change publishes a
// new table (with the pool's share redistributed and panic mode evaluated);
// it reports whether there was one. An instance that comes back starts its
// slow start.
func (r *Router) SetAvailable(route, pool, addr string, up bool) (changed bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.instances[instanceKey{route, pool, addr}]
	if in == nil {
		return false, fmt.Errorf("no instance %s in route %q pool %q", addr, route, pool)
	}
	if !in.down.CompareAndSwap(up, !up) {
		return false, nil
	}
	if up {
		in.rampStart.Store(time.Now().UnixNano())
	}
	t, err := compile(r.specs, func(route, pool string, u *url.URL) *Instance {
		return r.instances[instanceKey{route, pool, u.String()}]
	})
	if err != nil {
		return true, err // cannot happen: these specs compiled before
	}
	r.table.Store(t)
	return true, nil
}
