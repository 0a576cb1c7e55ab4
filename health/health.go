// Package health decides which instances are available: active probes (an
// HTTP GET per instance, with rise/fall hysteresis) and passive ejection
// (consecutive failures of live traffic, as Envoy's outlier detection).
//
// It reports through interfaces it declares: Setter receives availability
// transitions (the balancer implements it), Events receives them for logs
// and metrics. It imports neither.
package health

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"canaryd/panics"
	"canaryd/upstream"
)

// Setter receives availability changes.
type Setter interface {
	SetAvailable(in *upstream.Instance, up bool) (changed bool)
}

// Events receives what health does, for logs and metrics. Calls come from
// health's own goroutines or the request path (an ejection): keep them
// cheap and non-blocking.
type Events interface {
	// Transition is called once per change of an instance's availability.
	Transition(Transition)
	// EjectionRefused is called when max_ejected_percent kept an instance in.
	EjectionRefused(t Target, reason string)
}

// Transition is one instance going down or coming back.
type Transition struct {
	Target
	Up     bool
	Source Source
	Reason string
	// EjectedFor is the ejection's length (passive, down only).
	EjectedFor time.Duration
}

// Source is what decided a transition.
type Source uint8

const (
	// Active probes.
	Active Source = iota + 1
	// Passive ejection (or its end).
	Passive
	// Sync: a change of settings (probes turned off).
	Sync
)

func (s Source) String() string {
	switch s {
	case Active:
		return "active"
	case Passive:
		return "passive"
	case Sync:
		return "sync"
	}
	return "unknown"
}

// Target is one instance to judge.
type Target struct {
	Route, Pool, Addr string
	URL               *url.URL
	Config            Config
	// Instance is the instance's record, shared with the balancer: health
	// keeps its state there. Nil: Sync makes one (for a checker alone).
	Instance *upstream.Instance
}

// Config is an instance's health settings (see config.Health for the
// meaning and defaults of each).
type Config struct {
	ProbePath string // "": no HTTP probes
	// GRPC probes with grpc.health.v1.Health/Check for GRPCService
	// instead of GET ProbePath.
	GRPC        bool
	GRPCService string
	// Transport sends the probes (the pool's protocol and TLS); nil: the
	// checker's own HTTP/1.1 client. Compared by identity.
	Transport          http.RoundTripper
	Interval           time.Duration
	UnhealthyInterval  time.Duration
	Timeout            time.Duration
	Rise, Fall         int
	StatusLo, StatusHi int
	JitterPercent      int
	// Passive is passive ejection's settings.
	Passive upstream.Passive
}

func (c Config) probing() bool { return c.ProbePath != "" || c.GRPC }

// Checker judges a set of instances. Sync tells it which; Close stops it.
type Checker struct {
	setter Setter
	events Events
	prober *prober

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// sweepEvery is how often ejections are checked for expiry.
	sweepEvery time.Duration

	// mu serializes decisions (ejections, probe transitions, sync), never
	// the request path's counting.
	mu        sync.Mutex
	instances map[upstream.Key]*Instance
	// pools indexes instances by route and pool: an ejection's
	// max_ejected_percent and a rollout's PoolSummary count one pool, not
	// every instance of every route.
	pools map[poolKey][]*Instance
	// out are the ejected instances: the sweep looks at them only.
	out     map[*Instance]struct{}
	started bool
	// onPanic gets a panic of a probe or the sweeper (SetPanicHandler).
	onPanic panics.Handler
}

// SetPanicHandler sets who hears of a panic in the checker's goroutines
// (default: printed to stderr). Call it before Start.
func (c *Checker) SetPanicHandler(h panics.Handler) { c.onPanic = h }

type poolKey struct{ route, pool string }

// New returns a checker reporting to s and e.
func New(s Setter, e Events) *Checker {
	ctx, cancel := context.WithCancel(context.Background())
	return &Checker{
		setter: s, events: e, prober: newProber(),
		ctx: ctx, cancel: cancel,
		sweepEvery: 100 * time.Millisecond,
		instances:  map[upstream.Key]*Instance{},
		pools:      map[poolKey][]*Instance{},
		out:        map[*Instance]struct{}{},
	}
}

// Start launches the probes and the ejection sweeper. Before it, Sync only
// records targets (and passive ejection counts, but nothing expires).
func (c *Checker) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return
	}
	c.started = true
	c.wg.Add(1)
	go c.sweepLoop()
	for _, in := range c.instances {
		c.startProbeLocked(in)
	}
}

// startProbe launches in's probe loop if it has one to run. c.mu held.
func (c *Checker) startProbeLocked(in *Instance) {
	if !c.started || !in.Config.probing() || in.stopProbe != nil {
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	in.stopProbe = cancel
	c.wg.Add(1)
	go c.probeLoop(ctx, in, in.URL, in.Config, in.awaitFirst)
}

// Close stops every probe and the ejection sweeper, and waits for them.
func (c *Checker) Close() {
	c.cancel()
	c.wg.Wait()
	c.prober.close()
}

// Instance is the checker's handle on one instance: its target and probe.
// The instance's state (counters, ejection, availability) lives on its
// shared record, u.Health, where the request path reaches it without a
// lookup.
type Instance struct {
	Target
	c *Checker
	u *upstream.Instance
	h *upstream.Health // &u.Health

	// Guarded by c.mu: what the checker decides, never read on the
	// request path.
	stopProbe context.CancelFunc
	// up is the availability last reported; why says what took the
	// instance out, while it is out.
	up  bool
	why string
	// awaitFirst: a new instance of a dynamic pool, out until its first
	// probe passes.
	awaitFirst bool
	// ejectedUntil ends the current ejection; unejectedAt is when the
	// last one ended; ejections counts the recent ones (the backoff).
	ejectedUntil, unejectedAt time.Time
	ejections                 int
}

// Available is the instance's availability as health judges it.
func (in *Instance) Available() bool { return available(in.h) }

func available(h *upstream.Health) bool { return !h.Ejected.Load() && !h.ProbeDown.Load() }

// Ejected reports whether passive ejection has the instance out.
func (in *Instance) Ejected() bool { return in.h.Ejected.Load() }

// Sync makes the checker judge exactly targets: records of instances that
// stay are kept (availability, ejection history), new ones start
// available, records of instances no longer listed are dropped with their
// probes, and probes whose settings changed restart. It returns the record
// of every target, by index.
func (c *Checker) Sync(targets []Target) []*Instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.syncLocked(targets, nil)
}

// SyncPools is Sync for some pools only: pools names them, route by
// route, and targets are every instance of those pools; the other pools'
// records are left as they are (a dynamic pool's change, whatever the
// number of routes).
func (c *Checker) SyncPools(pools map[string][]string, targets []Target) []*Instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	scope := make(map[poolKey]bool)
	for route, names := range pools {
		for _, n := range names {
			scope[poolKey{route, n}] = true
		}
	}
	return c.syncLocked(targets, scope)
}

// syncLocked syncs targets, the whole set (scope nil) or the set of the
// pools in scope. c.mu held.
func (c *Checker) syncLocked(targets []Target, scope map[poolKey]bool) []*Instance {
	out := make([]*Instance, len(targets))
	keep := map[upstream.Key]bool{}
	for i, t := range targets {
		k := upstream.Key{Route: t.Route, Pool: t.Pool, Addr: t.Addr}
		keep[k] = true
		if t.Instance == nil {
			if old := c.instances[k]; old != nil {
				t.Instance = old.u
			} else {
				t.Instance = upstream.New(t.Route, t.Pool, t.URL)
			}
		}
		in := c.instances[k]
		switch {
		case in == nil || in.u != t.Instance:
			// A new instance, or a new record of it (the balancer made one):
			// its state starts here, available.
			if in != nil && in.stopProbe != nil {
				in.stopProbe()
			}
			in = &Instance{Target: t, c: c, u: t.Instance, h: &t.Instance.Health, up: true}
			c.instances[k] = in
			if !t.Instance.Available() && t.Config.probing() {
				// The balancer made it out of rotation until a probe
				// passes (it joined a dynamic pool that serves): one
				// passing probe, not rise, lets it in.
				in.h.ProbeDown.Store(true)
				in.up, in.why, in.awaitFirst = false, "active: a new instance, out of rotation until its first probe passes", true
			}
		case in.Config != t.Config && in.stopProbe != nil:
			in.stopProbe() // restarted below with the new settings
			in.stopProbe = nil
		}
		in.Target = t
		cfg := t.Config
		p := cfg.Passive
		in.h.Passive.Store(&p)
		if !cfg.probing() && in.h.ProbeDown.Load() {
			// Probes were turned off: nothing will ever bring it back.
			in.h.ProbeDown.Store(false)
			c.reportLocked(in, Sync, "active probes turned off", 0)
		}
		if !cfg.probing() && !t.Instance.Available() && !in.h.Ejected.Load() && !in.h.ProbeDown.Load() {
			c.setter.SetAvailable(in.u, true) // nothing would ever probe it in
		}
		c.startProbeLocked(in)
		out[i] = in
	}
	drop := func(k upstream.Key, in *Instance) {
		if in.stopProbe != nil {
			in.stopProbe()
		}
		delete(c.instances, k)
		delete(c.out, in)
	}
	if scope == nil {
		for k, in := range c.instances {
			if !keep[k] {
				drop(k, in)
			}
		}
		clear(c.pools)
		for _, in := range c.instances {
			pk := poolKey{in.Route, in.Pool}
			c.pools[pk] = append(c.pools[pk], in)
		}
		return out
	}
	for pk := range scope {
		for _, in := range c.pools[pk] {
			if k := in.u.Key(); !keep[k] && c.instances[k] == in {
				drop(k, in)
			}
		}
		delete(c.pools, pk)
	}
	for _, in := range out {
		pk := poolKey{in.Route, in.Pool}
		c.pools[pk] = append(c.pools[pk], in)
	}
	return out
}

// Observe counts one live request's outcome for the checker that owns
// the record.
func (in *Instance) Observe(status int, gatewayFailure, clientGone bool) {
	in.c.Observe(in.u, status, gatewayFailure, clientGone)
}

// Observe counts one live request's outcome on the instance's record. It
// is on the request path: atomics on the record the pick returned, no
// lookup, and a lock only when a threshold is crossed. A client that went
// away is no evidence either way.
func (c *Checker) Observe(u *upstream.Instance, status int, gatewayFailure, clientGone bool) {
	if clientGone {
		return
	}
	h := &u.Health
	cfg := h.Passive.Load()
	if cfg == nil {
		return // not judged by this checker (yet)
	}
	if gatewayFailure {
		if n := h.ConsecGateway.Add(1); cfg.ConsecutiveFailures > 0 && int(n) >= cfg.ConsecutiveFailures {
			c.eject(u, fmt.Sprintf("%d consecutive gateway failures (last: %d)", n, status))
		}
	} else if h.ConsecGateway.Load() != 0 {
		h.ConsecGateway.Store(0)
	}
	if status >= 500 {
		if n := h.Consec5xx.Add(1); cfg.Consecutive5xx > 0 && int(n) >= cfg.Consecutive5xx {
			c.eject(u, fmt.Sprintf("%d consecutive 5xx answers (last: %d)", n, status))
		}
	} else if h.Consec5xx.Load() != 0 {
		h.Consec5xx.Store(0)
	}
}

// eject takes an instance out for EjectFor × (its recent ejections), capped
// at MaxEjectFor, unless that would eject more than MaxEjectedPercent of
// its pool (one instance may always go).
func (c *Checker) eject(u *upstream.Instance, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := &u.Health
	h.ConsecGateway.Store(0)
	h.Consec5xx.Store(0)
	in := c.instances[u.Key()]
	if h.Ejected.Load() || in == nil || in.u != u {
		return // already out, or no longer configured
	}
	cfg := h.Passive.Load()
	total, ejected := 0, 0
	for _, o := range c.pools[poolKey{in.Route, in.Pool}] {
		total++
		if o.h.Ejected.Load() {
			ejected++
		}
	}
	if ejected > 0 && (ejected+1)*100 > cfg.MaxEjectedPercent*total {
		c.events.EjectionRefused(in.Target, fmt.Sprintf("%s; not ejected: %d of %d instances are out already (max_ejected_percent %d)", reason, ejected, total, cfg.MaxEjectedPercent))
		return
	}
	now := time.Now()
	if !in.unejectedAt.IsZero() && now.Sub(in.unejectedAt) > cfg.MaxEjectFor {
		in.ejections = 0 // behaved for long enough: forget the history
	}
	in.ejections++
	d := time.Duration(in.ejections) * cfg.EjectFor
	if d > cfg.MaxEjectFor {
		d = cfg.MaxEjectFor
	}
	in.ejectedUntil = now.Add(d)
	h.ProbeFailedSinceEjection.Store(h.ProbeDown.Load())
	h.Ejected.Store(true)
	c.out[in] = struct{}{}
	c.reportLocked(in, Passive, reason, d)
}

// sweepLoop returns ejected instances whose time is up. One goroutine for
// all of them: no timer per ejection, let alone per failed request.
func (c *Checker) sweepLoop() {
	defer c.wg.Done()
	defer panics.Recover(c.onPanic, "health sweeper")
	t := time.NewTicker(c.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case now := <-t.C:
			c.mu.Lock()
			for in := range c.out {
				if !now.Before(in.ejectedUntil) {
					delete(c.out, in)
					in.h.Ejected.Store(false)
					in.unejectedAt = now
					if c.instances[in.u.Key()] == in {
						c.reportLocked(in, Passive, "ejection over", 0)
					}
				}
			}
			c.mu.Unlock()
		}
	}
}

// report tells the Setter and Events when availability changed. c.mu held.
func (c *Checker) reportLocked(in *Instance, source Source, reason string, ejectedFor time.Duration) {
	up := in.Available()
	if up == in.up {
		return
	}
	in.up, in.why = up, ""
	if !up {
		in.why = source.String() + ": " + reason
	}
	if up {
		// Failures counted before the instance went out (by probes, say,
		// before passive ejection reached its threshold) say nothing about
		// the instance that came back: it starts with a clean count.
		in.h.ConsecGateway.Store(0)
		in.h.Consec5xx.Store(0)
	}
	// An instance the balancer no longer has (a reload removed it, and
	// the next Sync drops this record too) changes nothing served.
	c.setter.SetAvailable(in.u, up)
	c.events.Transition(Transition{Target: in.Target, Up: up, Source: source, Reason: reason, EjectedFor: ejectedFor})
}

// Why says what took an instance out of rotation ("active: 3 probes in a
// row failed; last: …"); "" while it is in, or for an instance this
// checker does not judge.
func (c *Checker) Why(u *upstream.Instance) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if in := c.instances[u.Key()]; in != nil && in.u == u {
		return in.why
	}
	return ""
}

// PoolSummary counts a pool's instances: total, available, ejected.
func (c *Checker) PoolSummary(route, pool string) (total, available, ejected int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, in := range c.pools[poolKey{route, pool}] {
		total++
		if in.Available() {
			available++
		}
		if in.h.Ejected.Load() {
			ejected++
		}
	}
	return total, available, ejected
}
