package rollout

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"canaryd/config"
	"canaryd/evidence"
	"canaryd/panics"

	"go.uber.org/zap"
)

// Counters reads a pool's cumulative request counts (exact to the
// request), weighted and preview traffic apart.
type Counters interface {
	PoolTraffic(route, pool string) evidence.Traffic
	// ShadowTraffic is the copies a route mirrors to pool, with the real
	// answers to the same requests.
	ShadowTraffic(route, pool string) evidence.Shadow
}

// Pools reports a pool's instances: total, available, ejected.
type Pools interface {
	PoolSummary(route, pool string) (total, available, ejected int)
}

// Metrics receives what rollouts export (package metrics' Rollouts:
// canaryd_rollout_step, canaryd_rollout_state and the verdicts). Required.
type Metrics interface {
	SetRoles(route, stable, canary string)
	SetRollout(route string, step int, state string, all []string)
	Verdict(route, check, result string)
	// Gate counts one gate's verdict (pass, fail, inconclusive).
	Gate(route, gate, verdict string)
	ForgetRollout(route string, all []string)
}

// Deps are what rollouts need from the rest of canaryd.
type Deps struct {
	// Sink gets every change of a rollout's weights. Default: none (the
	// caller reads Sync's result).
	Sink     Sink
	Counters Counters
	Pools    Pools
	Metrics  Metrics
	Log      *zap.Logger
	// Store keeps the states. Default: Files{StateDir}.
	Store Store
	// StateDir keeps one JSON file per route when Store is nil.
	StateDir string
	// OnPanic hears of a panic in a controller or the webhook notifier
	// (default: printed to stderr). A controller that panicked is gone:
	// its rollout is frozen at its current weights.
	OnPanic panics.Handler
	// Streams ends the streams a rolled back canary still serves
	// (rollback.close_streams_after). Default: none (the setting does
	// nothing).
	Streams Streams
	// Clustered: the manager starts as a follower. Its controllers decide
	// only between Lead and Follow; meanwhile it serves the states the
	// leader writes (Adopt).
	Clustered bool
}

// ErrNoRollout is returned for a route without a rollout.
var ErrNoRollout = errors.New("this route has no rollout")

// Manager runs the rollouts of every route that has one.
type Manager struct {
	deps     Deps
	notifier *notifier
	gates    *gateClient
	// httpChecks runs analysis.http (shared: one connection pool).
	httpChecks *httpChecker

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the notifier
	ctrlWG sync.WaitGroup // the controllers
	// halted is set by Stop: no controller decides any more.
	halted atomic.Bool

	// seq numbers the overrides published, so a Sink can drop one that
	// arrives after a newer one.
	seq atomic.Uint64

	// mu guards the fields below it.
	mu      sync.Mutex
	ctrls   map[string]*controller
	stops   map[string]context.CancelFunc
	started bool
	stopped bool
	// leading: the controllers decide (always, outside a cluster).
	leading bool
	// leader is the member id given to Lead, for the history.
	leader string

	// closeMu guards the streams to close (rollback.go): when, by route,
	// and the last close done, by route.
	closeMu sync.Mutex
	closing map[string]StreamClose
	closed  map[string]time.Time
}

// NewManager returns a manager; Sync tells it the routes, Start runs them.
func NewManager(d Deps) *Manager {
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Store == nil {
		d.Store = Files{Dir: d.StateDir}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{
		deps: d, ctx: ctx, cancel: cancel,
		notifier:   newNotifier(d.Log.Named("webhook")),
		gates:      newGateClient(),
		httpChecks: newHTTPChecker(),
		ctrls:      map[string]*controller{},
		closing:    map[string]StreamClose{},
		closed:     map[string]time.Time{},
		stops:      map[string]context.CancelFunc{},
		leading:    !d.Clustered,
	}
}

// Sync makes the manager run exactly the rollouts of routes. It never waits
// for a controller: a running one picks up its new spec at its next tick. A
// route whose release changed starts over at the first step; a route seen
// for the first time resumes its saved state if that was of the same
// release. It returns the weights every rollout imposes now (those of
// later changes go to the Sink).
func (m *Manager) Sync(routes []config.Route) map[string]Override {
	return m.SyncReleases(routes, nil)
}

// SyncReleases is Sync with what the pools hold now (rel; nil: the
// file's lists): instances that come and go are seen here, and a
// rollout reads them without calling back into the caller.
func (m *Manager) SyncReleases(routes []config.Route, rel Releases) map[string]Override {
	var toSave []*controller
	defer func() {
		for _, c := range toSave {
			c.persist()
		}
	}()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		// The process is draining (Stop): a reload that lands now starts
		// no release and moves no step; the saved states stand.
		return m.overridesLocked()
	}
	seen := map[string]bool{}
	for i := range routes {
		r := &routes[i]
		if r.Rollout == nil {
			continue
		}
		seen[r.Name] = true
		spec := *r.Rollout
		now := time.Now()
		c := m.ctrls[r.Name]
		if c == nil {
			c = m.newControllerLocked(now, r, &spec, rel)
			if m.leading {
				toSave = append(toSave, c)
			}
			continue
		}
		c.mu.Lock()
		c.spec = &spec
		c.setPoolsLocked(r, rel)
		switch {
		case !m.leading:
			// The leader decides what a changed route means; a state of
			// its that this member's pools did not hold yet serves now
			// if they do.
			if c.held != nil && c.sameReleaseLocked(c.held) {
				c.adoptLocked(*c.held)
			}
		case c.syncReleaseLocked(now):
			toSave = append(toSave, c)
		case c.st.Shadow && spec.Shadow == nil:
			c.leaveShadow(now, "the shadow phase was removed from the config; canary to %s%% (live)", nil)
			toSave = append(toSave, c)
		case c.st.Segment && spec.Segment == "":
			c.leaveSegmentLocked(now, "the segment was removed from the config; canary to %s%% (weighted)", nil)
			toSave = append(toSave, c)
		}
		c.mu.Unlock()
		c.setProm()
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	for name, c := range m.ctrls {
		if seen[name] {
			continue
		}
		if stop := m.stops[name]; stop != nil {
			stop()
			delete(m.stops, name)
		}
		delete(m.ctrls, name)
		if m.leading {
			if err := m.deps.Store.Remove(name); err != nil {
				m.deps.Log.Warn("cannot remove rollout state", zap.String("route", name), zap.Error(err))
			}
		}
		m.deps.Metrics.ForgetRollout(name, phaseNames)
		c.log.Info("rollout removed from the config; the file's weights apply", zap.String("route", name))
	}
	return m.overridesLocked()
}

// newController takes a route's rollout on: from its saved state on the
// leader (or a single process), from the cluster's on a follower; and
// runs it if the manager runs. m.mu held.
func (m *Manager) newControllerLocked(now time.Time, r *config.Route, spec *config.Rollout, rel Releases) *controller {
	c := &controller{m: m, route: r.Name, log: m.deps.Log, wake: make(chan struct{}, 1), spec: spec,
		gateDone: make(chan gateResult, 1)}
	c.setProm()
	c.mu.Lock()
	c.setPoolsLocked(r, rel)
	saved, err := m.deps.Store.Load(r.Name)
	if m.leading {
		c.fromSavedLocked(now, saved, err, "saved state", "resumed after restart")
	} else {
		c.followLocked(saved)
	}
	c.mu.Unlock()
	m.ctrls[r.Name] = c
	if m.started && !m.stopped && m.leading {
		m.launch(c)
	}
	return c
}

// Refresh tells a route's rollout what its pools hold now, after their
// instances changed without a new config (discovery, registrations),
// and returns the weights it imposes then (ok false: the route has no
// rollout). The caller applies them with the instances, in one table.
func (m *Manager) Refresh(r *config.Route, rel Releases) (o Override, ok bool) {
	c := m.get(r.Name)
	if c == nil {
		return Override{}, false
	}
	m.mu.Lock()
	leading := m.leading && !m.stopped
	m.mu.Unlock()
	c.mu.Lock()
	c.setPoolsLocked(r, rel)
	changed := leading && c.syncReleaseLocked(time.Now())
	if !leading && c.held != nil && c.sameReleaseLocked(c.held) {
		c.adoptLocked(*c.held)
	}
	w := c.weight.Load()
	c.mu.Unlock()
	if changed {
		c.persist()
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	if w == nil {
		return Override{}, false
	}
	return *w, true
}

func (c *controller) setProm() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prom = nil
	if pa := c.spec.Analysis.Prometheus; pa != nil {
		p, err := newPromChecker(pa)
		if err != nil {
			c.log.Error("prometheus checks disabled", zap.String("route", c.route), zap.Error(err))
			return
		}
		c.prom = p
	}
}

// overridesLocked is every rollout's override, by route. m.mu held.
func (m *Manager) overridesLocked() map[string]Override {
	out := make(map[string]Override, len(m.ctrls))
	for name, c := range m.ctrls {
		if o := c.weight.Load(); o != nil {
			out[name] = *o
		}
	}
	return out
}

// Start runs every controller (and those Sync adds later).
func (m *Manager) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return
	}
	m.started = true
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer panics.Recover(m.deps.OnPanic, "webhook notifier")
		m.notifier.run(m.ctx)
	}()
	if m.deps.Streams != nil {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer panics.Recover(m.deps.OnPanic, "rollout stream closer")
			m.runCloser(m.ctx)
		}()
	}
	if m.stopped || !m.leading {
		return
	}
	for _, c := range m.ctrls {
		m.launch(c)
	}
}

func (m *Manager) launch(c *controller) {
	ctx, cancel := context.WithCancel(m.ctx)
	m.stops[c.route] = cancel
	m.ctrlWG.Add(1)
	go func() {
		defer m.ctrlWG.Done()
		defer panics.Recover(m.deps.OnPanic, "rollout controller")
		c.run(ctx)
	}()
}

// Stop ends all deciding, for a process that is about to drain: no
// analysis or tripwire acts after it returns (one that was running when it
// was called is discarded), and every rollout's state is saved as it is,
// so a restart resumes exactly that step. A draining process sees no new
// traffic; a controller still judging then would record fiction. Operator
// commands (Control) still work and are saved. Stop is idempotent.
func (m *Manager) Stop() {
	m.halted.Store(true)
	m.mu.Lock()
	m.stopped = true
	for name, stop := range m.stops {
		stop()
		delete(m.stops, name)
	}
	ctrls := make([]*controller, 0, len(m.ctrls))
	for _, c := range m.ctrls {
		ctrls = append(ctrls, c)
	}
	leading := m.leading
	m.mu.Unlock()
	m.ctrlWG.Wait()
	for _, c := range ctrls {
		if !leading {
			continue // a follower's states are the leader's to save
		}
		c.persist()
		st := c.status()
		c.log.Info("rollout stopped deciding; state saved", zap.String("route", c.route), zap.Stringer("phase", st.Phase),
			zap.Int("step", st.Step), zap.Float64("canary_weight", st.CanaryWeight))
	}
}

// Close stops every controller (as Stop does) and the notifier, and waits
// for them.
func (m *Manager) Close() {
	m.mu.Lock()
	stopped := m.stopped
	m.mu.Unlock()
	if !stopped {
		m.Stop()
	}
	m.cancel()
	m.wg.Wait()
}

func (m *Manager) get(route string) *controller {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ctrls[route]
}

// Status returns a route's rollout status.
func (m *Manager) Status(route string) (Status, error) {
	c := m.get(route)
	if c == nil {
		return Status{}, ErrNoRollout
	}
	return c.status(), nil
}

// Control runs promote, abort, pause or resume on a route's rollout. In a
// cluster only the leader runs it (ErrNotLeader elsewhere: send the
// command to the leader).
func (m *Manager) Control(route string, action Action) (Status, error) {
	c := m.get(route)
	if c == nil {
		return Status{}, ErrNoRollout
	}
	if !m.Leading() {
		return c.status(), ErrNotLeader
	}
	if err := c.control(action); err != nil {
		return c.status(), err
	}
	return c.status(), nil
}

// Approve gives a person's go-ahead to a route's pending approval gate.
// In a cluster only the leader takes it (ErrNotLeader elsewhere).
func (m *Manager) Approve(route string, a Approval) (Status, error) {
	c := m.get(route)
	if c == nil {
		return Status{}, ErrNoRollout
	}
	if !m.Leading() {
		return c.status(), ErrNotLeader
	}
	if err := c.approve(a); err != nil {
		return c.status(), err
	}
	return c.status(), nil
}

// SetWebhooks tells the notifier where each route's events go:
// rollout.notify, and rollout.webhook as one json entry of every event
// but analysis.
func (m *Manager) SetWebhooks(routes []config.Route) {
	hooks := map[string][]config.Notify{}
	for _, r := range routes {
		if r.Rollout == nil {
			continue
		}
		if w := r.Rollout.Webhook; w.URL != "" {
			hooks[r.Name] = append(hooks[r.Name], config.Notify{URL: w.URL, Format: config.NotifyJSON, Events: config.DefaultNotifyEvents(),
				Timeout: w.Timeout, Retries: w.Retries})
		}
		hooks[r.Name] = append(hooks[r.Name], r.Rollout.Notify...)
	}
	m.notifier.set(hooks)
}
