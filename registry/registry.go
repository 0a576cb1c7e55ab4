// Package registry keeps the instances that register themselves into a
// pool (pools[].registered: true) through the admin API: replace a pool's
// set, add to it, remove from it, each registration with an optional
// lease that expires unless renewed. It checks every request whole before
// it changes anything, keeps the registrations in a Store (a file in
// state_dir, or the cluster's etcd), and hands each pool's new set to a
// Sink, one pool at a time, in the order the changes happened.
package registry

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"canaryd/panics"
)

// Limits of one request.
const (
	// MinTTL is etcd's lease minimum, so that a lease means the same in
	// a single process and in a cluster.
	MinTTL = 2 * time.Second
	MaxTTL = 24 * time.Hour
	// MaxPerCall bounds the instances of one PUT or POST.
	MaxPerCall = 1000
	// MaxBody bounds a request's body.
	MaxBody = 1 << 20
)

// Registration is one instance registered into a pool.
type Registration struct {
	Route string `json:"route"`
	Pool  string `json:"pool"`
	// Addr is the instance as the proxy reaches it:
	// "http://127.0.0.1:9011" (canonical, see config.ParseInstance).
	Addr    string `json:"addr"`
	Version string `json:"version,omitempty"`
	// TTL is the lease: without a renewal (the same POST again) within
	// it, the registration expires. 0: none.
	TTL time.Duration `json:"ttl,omitempty"`
	// Expires is when the lease runs out (zero without a TTL).
	Expires time.Time `json:"expires,omitzero"`
	// Registered is the first registration; Renewed the latest.
	Registered time.Time `json:"registered"`
	Renewed    time.Time `json:"renewed"`
	// From is who registered it: the client's address, and the member
	// that took it in a cluster.
	From string `json:"from,omitempty"`
	// Lease is the store's handle on the TTL (an etcd lease id in a
	// cluster; 0 otherwise): a renewal keeps it alive rather than taking
	// a new one.
	Lease int64 `json:"lease,omitempty"`
}

// Host is the registration's host:port, its key in the pool.
func (r Registration) Host() string {
	u, err := url.Parse(r.Addr)
	if err != nil {
		return r.Addr
	}
	return u.Host
}

// Key names one registration.
type Key struct{ Route, Pool, Host string }

func (r Registration) key() Key { return Key{r.Route, r.Pool, r.Host()} }

// Pools tells which pools take registrations, and parses an instance
// the way the file's are parsed. The pipeline answers from the applied
// config.
type Pools interface {
	// Registered is nil for a route's pool with registered: true; else
	// an error wrapping ErrUnknown or ErrNotRegistered that says why.
	Registered(route, pool string) error
	// ParseInstance is config.ParseInstance.
	ParseInstance(s string) (*url.URL, error)
}

// Sink gets a pool's whole set after each change: its instances, sorted,
// and their version. It must not call back into the registry.
type Sink interface {
	SetInstances(route, pool string, instances []*url.URL, version string)
}

// Cache keeps a copy of the whole set (File does).
type Cache interface {
	SaveAll(all []Registration) error
}

// Store keeps the registrations.
type Store interface {
	// Write saves a change: the registrations put (new or renewed) and
	// those deleted. All or nothing.
	Write(put []Registration, del []Key) error
}

// Errors, and the status the API answers for each.
var (
	// ErrUnknown: no such route or pool (404).
	ErrUnknown = errors.New("unknown")
	// ErrNotRegistered: the pool does not take registrations (409).
	ErrNotRegistered = errors.New("not a registered pool")
	// ErrConflict: the request disagrees with the pool's state (409).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request is wrong in itself (400).
	ErrInvalid = errors.New("invalid")
	// ErrStore: the store refused the change; nothing changed (503).
	ErrStore = errors.New("store")
)

// Error is a refusal: Kind is one of the errors above (errors.Is finds
// it), Error the message alone.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

func fail(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Request is the body of PUT and POST .../instances.
type Request struct {
	Version   string   `json:"version"`
	Instances []string `json:"instances"`
	// TTL as a Go duration ("30s"); "" for none.
	TTL string `json:"ttl"`
}

// Mode is what a request does to the pool's set.
type Mode int

const (
	// Replace: the set becomes the request's instances (PUT).
	Replace Mode = iota
	// Add: the request's instances join the set, or renew their lease
	// (POST).
	Add
)

// Options configure a Registry.
type Options struct {
	Pools Pools
	Sink  Sink
	Store Store
	// Expire: the registry expires leases itself (a single process).
	// false: the store does (etcd's leases) and tells Replace.
	Expire bool
	// Cache keeps a copy of what Replace brings (a cluster member's
	// state_dir file), so that a member that starts while etcd is out of
	// reach serves the last set it knew, not empty pools. Default nil.
	Cache Cache
	// Member names this process in From (a cluster's member id).
	Member string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// OnPanic hears of a panic in the expiry loop (default: stderr).
	OnPanic panics.Handler
	// Check is how often leases are checked for expiry. Default 200ms.
	Check time.Duration
}

// Registry is the registered pools' instances.
type Registry struct {
	o Options

	// pubMu orders the Sink's calls as the changes happened: it is taken
	// before mu, and held while the Sink runs.
	pubMu sync.Mutex

	// mu guards the fields below it.
	mu   sync.Mutex
	regs map[poolKey]map[string]Registration // by host:port

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	started   atomic.Bool
}

type poolKey struct{ route, pool string }

// New returns a registry holding loaded (a restart's registrations, with
// the time each lease had left at the last save, resumed from now).
func New(o Options, loaded []Registration) *Registry {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Check <= 0 {
		o.Check = 200 * time.Millisecond
	}
	r := &Registry{o: o, regs: map[poolKey]map[string]Registration{}, stop: make(chan struct{}), done: make(chan struct{})}
	for _, g := range loaded {
		r.putLocked(g)
	}
	return r
}

// Publish hands the Sink every pool's set (a restart's registrations,
// before the first config is applied).
func (r *Registry) Publish() {
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	r.mu.Lock()
	var pools []poolKey
	for k := range r.regs {
		pools = append(pools, k)
	}
	r.mu.Unlock()
	r.publishLocked(pools)
}

// Start runs the expiry loop until Close (a single process: in a cluster
// etcd's leases expire registrations).
func (r *Registry) Start() {
	r.started.Store(true)
	if !r.o.Expire {
		close(r.done)
		return
	}
	go func() {
		defer close(r.done)
		defer panics.Recover(r.o.OnPanic, "registration expiry")
		t := time.NewTicker(r.o.Check)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-t.C:
				r.expire()
			}
		}
	}()
}

// Close stops the expiry loop (if Start ran) and saves what the store
// holds back (a File's renewals not saved yet).
func (r *Registry) Close() {
	r.closeOnce.Do(func() { close(r.stop) })
	if r.started.Load() {
		<-r.done
	}
	var flush any = r.o.Store
	if r.o.Cache != nil {
		flush = r.o.Cache
	}
	if f, ok := flush.(interface{ Flush() error }); ok {
		r.pubMu.Lock()
		defer r.pubMu.Unlock()
		_ = f.Flush() // a failure leaves the last save: leases resume shorter
	}
}

// List is a pool's registrations, sorted by address.
func (r *Registry) List(route, pool string) []Registration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listLocked(poolKey{route, pool})
}

func (r *Registry) listLocked(k poolKey) []Registration {
	out := make([]Registration, 0, len(r.regs[k]))
	for _, g := range r.regs[k] {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}

// versionLocked is a pool's version ("" when it has none or no
// instances): a pool holds one at a time. r.mu held.
func (r *Registry) versionLocked(k poolKey) string {
	for _, g := range r.regs[k] {
		return g.Version
	}
	return ""
}

// Register applies a PUT (Replace) or a POST (Add) from a client at from.
// The request is checked whole first: an error changes nothing.
func (r *Registry) Register(route, pool string, mode Mode, req Request, from string) ([]Registration, error) {
	if err := r.o.Pools.Registered(route, pool); err != nil {
		return nil, err
	}
	urls, ttl, err := r.check(req, mode)
	if err != nil {
		return nil, err
	}
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	k := poolKey{route, pool}
	now := r.o.Now()
	if r.o.Member != "" {
		from += " via " + r.o.Member
	}
	r.mu.Lock()
	cur := r.regs[k]
	version := req.Version
	if mode == Add {
		have := r.versionLocked(k)
		switch {
		case len(cur) == 0:
		case version == "":
			version = have
		case version != have:
			r.mu.Unlock()
			return nil, fail(ErrConflict, "pool %q of route %q runs version %q, and a pool holds one version at a time; register %s into the route's other pool, or replace this pool's set with PUT (canaryd instances %s %s --set ... --version %s)",
				pool, route, have, req.Version, route, pool, req.Version)
		}
	}
	var put []Registration
	var del []Key
	keep := map[string]bool{}
	for _, u := range urls {
		g := Registration{Route: route, Pool: pool, Addr: u.String(), Version: version, TTL: ttl, Registered: now, Renewed: now, From: from}
		if old, ok := cur[u.Host]; ok && old.Addr == g.Addr {
			g.Registered = old.Registered
			if old.TTL == ttl {
				g.Lease = old.Lease
			}
		}
		if ttl > 0 {
			g.Expires = now.Add(ttl)
		}
		keep[u.Host] = true
		put = append(put, g)
	}
	if mode == Replace {
		for host, old := range cur {
			if !keep[host] {
				del = append(del, old.key())
			}
		}
	}
	r.mu.Unlock()
	if err := r.o.Store.Write(put, del); err != nil {
		return nil, fail(ErrStore, "saving the registrations failed, nothing changed: %v", err)
	}
	r.mu.Lock()
	for _, d := range del {
		delete(r.regs[k], d.Host)
	}
	for _, g := range put {
		r.putLocked(g)
	}
	r.mu.Unlock()
	r.publishLocked([]poolKey{k})
	r.saveCache()
	return r.List(route, pool), nil
}

// Remove deregisters one instance, given as host:port (or its URL).
func (r *Registry) Remove(route, pool, addr string) ([]Registration, error) {
	if err := r.o.Pools.Registered(route, pool); err != nil {
		return nil, err
	}
	u, err := r.o.Pools.ParseInstance(addr)
	if err != nil {
		return nil, fail(ErrInvalid, "%v", err)
	}
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	k := poolKey{route, pool}
	r.mu.Lock()
	g, ok := r.regs[k][u.Host]
	r.mu.Unlock()
	if !ok {
		return nil, fail(ErrUnknown, "%s is not registered in pool %q of route %q (canaryd instances %s %s lists them)", u.Host, pool, route, route, pool)
	}
	if err := r.o.Store.Write(nil, []Key{g.key()}); err != nil {
		return nil, fail(ErrStore, "saving the registrations failed, nothing changed: %v", err)
	}
	r.mu.Lock()
	delete(r.regs[k], u.Host)
	r.mu.Unlock()
	r.publishLocked([]poolKey{k})
	r.saveCache()
	return r.List(route, pool), nil
}

// check parses a request, or says what is wrong with it.
func (r *Registry) check(req Request, mode Mode) ([]*url.URL, time.Duration, error) {
	if len(req.Instances) == 0 && mode == Add {
		return nil, 0, fail(ErrInvalid, "no instances; send {\"instances\": [\"10.0.0.5:8080\"], \"version\": \"v2\", \"ttl\": \"30s\"}")
	}
	if len(req.Instances) > MaxPerCall {
		return nil, 0, fail(ErrInvalid, "%d instances in one call; at most %d (send the rest in further POSTs)", len(req.Instances), MaxPerCall)
	}
	if err := checkVersion(req.Version); err != nil {
		return nil, 0, fail(ErrInvalid, "%v", err)
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			return nil, 0, fail(ErrInvalid, "ttl %q is not a duration; write it as \"30s\" or \"5m\"", req.TTL)
		}
		if d < MinTTL || d > MaxTTL {
			return nil, 0, fail(ErrInvalid, "ttl %s is not from %s to %s (2s is etcd's lease minimum; leave ttl out for a registration that never expires)", d, MinTTL, MaxTTL)
		}
		ttl = d
	}
	seen := map[string]int{}
	urls := make([]*url.URL, 0, len(req.Instances))
	for i, s := range req.Instances {
		u, err := r.o.Pools.ParseInstance(s)
		if err != nil {
			return nil, 0, fail(ErrInvalid, "instances[%d]: %v", i, err)
		}
		if j, dup := seen[u.Host]; dup {
			return nil, 0, fail(ErrInvalid, "instances[%d] %q is instances[%d] again; list each instance once", i, s, j)
		}
		seen[u.Host] = i
		urls = append(urls, u)
	}
	return urls, ttl, nil
}

// checkVersion is config.CheckVersion's rule (up to 64 printable bytes,
// no spaces), kept here so registry needs no config.
func checkVersion(s string) error {
	if len(s) > 64 {
		return fmt.Errorf("version %q is longer than 64 characters", s)
	}
	if strings.IndexFunc(s, func(c rune) bool { return c <= ' ' || c >= 0x7f }) >= 0 {
		return fmt.Errorf("version %q may only use printable characters without spaces (v2.4.0, 2026-12-05.1, a git sha)", s)
	}
	return nil
}

// putLocked records one registration. r.mu held.
func (r *Registry) putLocked(g Registration) {
	k := poolKey{g.Route, g.Pool}
	if r.regs[k] == nil {
		r.regs[k] = map[string]Registration{}
	}
	r.regs[k][g.Host()] = g
}

// expire removes the registrations whose lease ran out.
func (r *Registry) expire() {
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	now := r.o.Now()
	var del []Key
	r.mu.Lock()
	for _, m := range r.regs {
		for _, g := range m {
			if !g.Expires.IsZero() && !now.Before(g.Expires) {
				del = append(del, g.key())
			}
		}
	}
	r.mu.Unlock()
	if len(del) == 0 {
		return
	}
	// Expired is expired: the store's failure to record it must not keep
	// a dead instance serving (the next save writes the set without it).
	_ = r.o.Store.Write(nil, del)
	pools := map[poolKey]bool{}
	r.mu.Lock()
	for _, d := range del {
		delete(r.regs[poolKey{d.Route, d.Pool}], d.Host)
		pools[poolKey{d.Route, d.Pool}] = true
	}
	r.mu.Unlock()
	var ks []poolKey
	for k := range pools {
		ks = append(ks, k)
	}
	r.publishLocked(ks)
}

// Replace takes the whole set of registrations from a shared store (the
// cluster's watch): every pool whose set changed is published.
func (r *Registry) Replace(all []Registration) {
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	next := map[poolKey]map[string]Registration{}
	for _, g := range all {
		k := poolKey{g.Route, g.Pool}
		if next[k] == nil {
			next[k] = map[string]Registration{}
		}
		next[k][g.Host()] = g
	}
	r.mu.Lock()
	var changed []poolKey
	for k, m := range next {
		if !sameSet(r.regs[k], m) {
			changed = append(changed, k)
		}
	}
	for k, m := range r.regs {
		if _, ok := next[k]; !ok && len(m) > 0 {
			changed = append(changed, k)
		}
	}
	r.regs = next
	r.mu.Unlock()
	r.publishLocked(changed)
	r.saveCache()
}

// saveCache saves the whole set to the Cache, if there is one: after
// this member's own writes and after each set etcd brings. A copy that
// cannot be saved only costs a restart without etcd its last set; the
// serving set is unchanged. r.pubMu held.
func (r *Registry) saveCache() {
	if r.o.Cache == nil {
		return
	}
	r.mu.Lock()
	var all []Registration
	for _, m := range r.regs {
		for _, g := range m {
			all = append(all, g)
		}
	}
	r.mu.Unlock()
	_ = r.o.Cache.SaveAll(all)
}

func sameSet(a, b map[string]Registration) bool {
	if len(a) != len(b) {
		return false
	}
	for h, g := range a {
		if o, ok := b[h]; !ok || o.Addr != g.Addr || o.Version != g.Version {
			return false
		}
	}
	return true
}

// publishLocked hands the Sink each pool's set (nothing after Close: the
// process is stopping). r.pubMu held.
func (r *Registry) publishLocked(pools []poolKey) {
	select {
	case <-r.stop:
		return
	default:
	}
	sort.Slice(pools, func(i, j int) bool {
		if pools[i].route != pools[j].route {
			return pools[i].route < pools[j].route
		}
		return pools[i].pool < pools[j].pool
	})
	for _, k := range pools {
		r.mu.Lock()
		regs := r.listLocked(k)
		version := r.versionLocked(k)
		r.mu.Unlock()
		urls := make([]*url.URL, 0, len(regs))
		for _, g := range regs {
			if u, err := url.Parse(g.Addr); err == nil {
				urls = append(urls, u)
			}
		}
		r.o.Sink.SetInstances(k.route, k.pool, urls, version)
	}
}
