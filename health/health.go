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
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Setter receives availability changes.
type Setter interface {
	SetAvailable(route, pool, addr string, up bool) (changed bool, err error)
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
	Source string // "active", "passive" or "sync"
	Reason string
	// EjectedFor is the ejection's length (passive, down only).
	EjectedFor time.Duration
}

// Target is one instance to judge.
type Target struct {
	Route, Pool, Addr string
	URL               *url.URL
	Config            Config
}

// Config is an instance's health settings (see config.Health for the
// meaning and defaults of each).
type Config struct {
	ProbePath           string // "": no active probes
	Interval            time.Duration
	UnhealthyInterval   time.Duration
	Timeout             time.Duration
	Rise, Fall          int
	StatusLo, StatusHi  int
	JitterPercent       int
	ConsecutiveFailures int // gateway failures; 0: off
	Consecutive5xx      int // 0: off
	EjectFor            time.Duration
	MaxEjectFor         time.Duration
	MaxEjectedPercent   int
}

type key struct{ route, pool, addr string }

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
	instances map[key]*Instance
	// pools indexes instances by route and pool: an ejection's
	// max_ejected_percent and a rollout's PoolSummary count one pool, not
	// every instance of every route.
	pools map[poolKey][]*Instance
	// out are the ejected instances: the sweep looks at them only.
	out     map[*Instance]struct{}
	started bool
}

type poolKey struct{ route, pool string }

// New returns a checker reporting to s and e.
func New(s Setter, e Events) *Checker {
	ctx, cancel := context.WithCancel(context.Background())
	return &Checker{
		setter: s, events: e, prober: newProber(),
		ctx: ctx, cancel: cancel,
		sweepEvery: 100 * time.Millisecond,
		instances:  map[key]*Instance{},
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
		c.startProbe(in)
	}
}

// startProbe launches in's probe loop if it has one to run. c.mu held.
func (c *Checker) startProbe(in *Instance) {
	if !c.started || in.Config.ProbePath == "" || in.stopProbe != nil {
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	in.stopProbe = cancel
	c.wg.Add(1)
	go c.probeLoop(ctx, in, in.URL, in.Config)
}

// Close stops every probe and the ejection sweeper, and waits for them.
func (c *Checker) Close() {
	c.cancel()
	c.wg.Wait()
	c.prober.close()
}

// Instance is the health record of one instance. It outlives reloads that
// keep the instance.
type Instance struct {
	Target
	c *Checker

	// Counted on the request path, lock-free.
	consecGateway atomic.Int32
	consec5xx     atomic.Int32
	passive       atomic.Pointer[Config]

	// Decided under c.mu; read anywhere.
	ejected   atomic.Bool
	probeDown atomic.Bool
	// probeFailedSinceEjection: a probe failed during the current ejection,
	// so passing probes afterwards mean the instance really came back.
	probeFailedSinceEjection atomic.Bool

	// Guarded by c.mu.
	up           bool // last availability reported to the Setter
	ejectedUntil time.Time
	unejectedAt  time.Time
	ejections    int
	stopProbe    context.CancelFunc
}

// Available is the instance's availability as last reported.
func (in *Instance) Available() bool { return !in.ejected.Load() && !in.probeDown.Load() }

// Ejected reports whether passive ejection has the instance out.
func (in *Instance) Ejected() bool { return in.ejected.Load() }

// Sync makes the checker judge exactly targets: records of instances that
// stay are kept (availability, ejection history), new ones start
// available, records of instances no longer listed are dropped with their
// probes, and probes whose settings changed restart. It returns the record
// of every target, by index.
func (c *Checker) Sync(targets []Target) []*Instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Instance, len(targets))
	keep := map[key]bool{}
	for i, t := range targets {
		k := key{t.Route, t.Pool, t.Addr}
		keep[k] = true
		in := c.instances[k]
		if in == nil {
			in = &Instance{Target: t, c: c, up: true}
			c.instances[k] = in
		} else if in.Config != t.Config && in.stopProbe != nil {
			in.stopProbe() // restarted below with the new settings
			in.stopProbe = nil
		}
		in.Target = t
		cfg := t.Config
		in.passive.Store(&cfg)
		if cfg.ProbePath == "" && in.probeDown.Load() {
			// Probes were turned off: nothing will ever bring it back.
			in.probeDown.Store(false)
			c.report(in, "sync", "active probes turned off", 0)
		}
		c.startProbe(in)
		out[i] = in
	}
	for k, in := range c.instances {
		if !keep[k] {
			if in.stopProbe != nil {
				in.stopProbe()
			}
			delete(c.instances, k)
			delete(c.out, in)
		}
	}
	clear(c.pools)
	for _, in := range c.instances {
		pk := poolKey{in.Route, in.Pool}
		c.pools[pk] = append(c.pools[pk], in)
	}
	return out
}

// Observe counts one live request's outcome. It is on the request path:
// atomics only, and a lock only when a threshold is crossed. A client that
// went away is no evidence either way.
func (in *Instance) Observe(status int, gatewayFailure, clientGone bool) {
	if clientGone {
		return
	}
	cfg := in.passive.Load()
	if gatewayFailure {
		if n := in.consecGateway.Add(1); cfg.ConsecutiveFailures > 0 && int(n) >= cfg.ConsecutiveFailures {
			in.c.eject(in, fmt.Sprintf("%d consecutive gateway failures (last: %d)", n, status))
		}
	} else if in.consecGateway.Load() != 0 {
		in.consecGateway.Store(0)
	}
	if status >= 500 {
		if n := in.consec5xx.Add(1); cfg.Consecutive5xx > 0 && int(n) >= cfg.Consecutive5xx {
			in.c.eject(in, fmt.Sprintf("%d consecutive 5xx answers (last: %d)", n, status))
		}
	} else if in.consec5xx.Load() != 0 {
		in.consec5xx.Store(0)
	}
}

// eject takes an instance out for EjectFor × (its recent ejections), capped
// at MaxEjectFor, unless that would eject more than MaxEjectedPercent of
// its pool (one instance may always go).
func (c *Checker) eject(in *Instance, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	in.consecGateway.Store(0)
	in.consec5xx.Store(0)
	if in.ejected.Load() || c.instances[key{in.Route, in.Pool, in.Addr}] != in {
		return // already out, or no longer configured
	}
	cfg := in.passive.Load()
	total, ejected := 0, 0
	for _, o := range c.pools[poolKey{in.Route, in.Pool}] {
		total++
		if o.ejected.Load() {
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
	in.probeFailedSinceEjection.Store(in.probeDown.Load())
	in.ejected.Store(true)
	c.out[in] = struct{}{}
	c.report(in, "passive", reason, d)
}

// sweepLoop returns ejected instances whose time is up. One goroutine for
// all of them: no timer per ejection, let alone per failed request.
func (c *Checker) sweepLoop() {
	defer c.wg.Done()
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
					in.ejected.Store(false)
					in.unejectedAt = now
					if c.instances[key{in.Route, in.Pool, in.Addr}] == in {
						c.report(in, "passive", "ejection over", 0)
					}
				}
			}
			c.mu.Unlock()
		}
	}
}

// report tells the Setter and Events when availability changed. c.mu held.
func (c *Checker) report(in *Instance, source, reason string, ejectedFor time.Duration) {
	up := in.Available()
	if up == in.up {
		return
	}
	in.up = up
	if up {
		// Failures counted before the instance went out (by probes, say,
		// before passive ejection reached its threshold) say nothing about
		// the instance that came back: it starts with a clean count.
		in.consecGateway.Store(0)
		in.consec5xx.Store(0)
	}
	// The only error is an instance the balancer no longer has: a reload
	// removed it, and the next Sync drops this record too.
	_, _ = c.setter.SetAvailable(in.Route, in.Pool, in.Addr, up)
	c.events.Transition(Transition{Target: in.Target, Up: up, Source: source, Reason: reason, EjectedFor: ejectedFor})
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
		if in.ejected.Load() {
			ejected++
		}
	}
	return total, available, ejected
}
