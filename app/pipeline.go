package app

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"canaryd/balancer"
	"canaryd/config"
	"canaryd/health"
	"canaryd/metrics"
	"canaryd/panics"
	"canaryd/proxy"
	"canaryd/rollout"
)

// pipeline is the one owner of every change to the routing table. Each
// trigger (the first start, a reload, weights set by hand, a rollout's
// push, the cluster's partition, a dynamic pool's new instances from DNS
// or registrations; next, included files) hands it a change, and one
// method, applyLocked, runs the sequence: sync the rollouts (a new
// config, or the release a pool's new instances make), build the specs
// the change needs,
// swap them into the table, retire the mirrors and transports no longer
// used, publish the weights, sync health, drain the instances removed.
//
// It holds the lock that serializes those changes and everything that lock
// guards. The Server keeps the listeners, the lifecycle and the admin
// view; the request path reads the router's table and never this lock.
type pipeline struct {
	// Set by newPipeline (rollouts by setRollouts, before the first
	// apply) and never changed after.
	log        *zap.Logger
	static     *config.Config // as started: the settings that need a restart
	router     *balancer.Router
	requests   *metrics.Requests
	shadows    *metrics.Shadows
	checker    *health.Checker
	health     *metrics.Health
	rollouts   *rollout.Manager
	transport  *proxy.Transport // the default: plain HTTP/1.1 pools, mirrors
	clustered  bool
	onPanic    panics.Handler
	background *sync.WaitGroup
	stopping   <-chan struct{} // closed when the drain begins

	// mu serializes every change to the table and guards the fields
	// below it. Functions that need it held end in Locked.
	mu          sync.Mutex
	cfg         *config.Config
	appliedHash string
	// byName indexes cfg.Routes.
	byName map[string]int
	// overrides are the weights the rollouts impose (or the cluster's
	// leader), pushed by them (SetOverride) and by reloads (Sync's
	// result).
	overrides map[string]rollout.Override
	// partitioned: cut off from the cluster for partition_timeout, with
	// on_partition stable.
	partitioned bool
	// manual holds weights set through the API, by route; versions
	// counts them.
	manual   map[string]manualWeights
	versions map[string]int
	// mirrors are the routes' running mirrors, by route; retired ones
	// are closed once a table without them is live.
	mirrors map[string]*mirrorEntry
	retired []*proxy.Mirror
	// conns are the pools' transports by settings (connForLocked).
	conns map[connKey]*poolConn
	// dynamic are the dynamic pools' latest sets, by source (dynamic.go);
	// applied: the first config is live (sets that come before it wait
	// for it).
	dynamic map[source]map[poolRef]*dynamicSet
	applied bool
}

// pipelineDeps are what a pipeline is built from.
type pipelineDeps struct {
	log        *zap.Logger
	static     *config.Config
	router     *balancer.Router
	requests   *metrics.Requests
	shadows    *metrics.Shadows
	checker    *health.Checker
	health     *metrics.Health
	transport  *proxy.Transport
	clustered  bool
	onPanic    panics.Handler
	background *sync.WaitGroup
	stopping   <-chan struct{}
}

func newPipeline(d pipelineDeps) *pipeline {
	static := settingsOf(d.static)
	return &pipeline{
		log: d.log, static: &static, router: d.router, requests: d.requests, shadows: d.shadows,
		checker: d.checker, health: d.health, transport: d.transport, clustered: d.clustered,
		onPanic: d.onPanic, background: d.background, stopping: d.stopping,
		cfg: d.static, byName: routeIndex(d.static),
		overrides: map[string]rollout.Override{}, manual: map[string]manualWeights{}, versions: map[string]int{},
		mirrors: map[string]*mirrorEntry{}, conns: map[connKey]*poolConn{},
		dynamic: map[source]map[poolRef]*dynamicSet{fromDNS: {}, fromRegistrations: {}},
	}
}

// setRollouts gives the pipeline the rollout manager, which is built with
// the pipeline as its Sink. Before the first apply.
func (p *pipeline) setRollouts(m *rollout.Manager) { p.rollouts = m }

func routeIndex(cfg *config.Config) map[string]int {
	m := make(map[string]int, len(cfg.Routes))
	for i, r := range cfg.Routes {
		m[r.Name] = i
	}
	return m
}

// change is what one apply is given: a whole config (the first start, a
// reload), or the routes whose inputs changed under the same config (a
// rollout's push, weights set by hand, the partition), whose work is
// those routes' only, whatever the number of routes.
type change struct {
	cfg  *config.Config // a new config; nil: routes only
	hash string         // cfg's file hash
	// routes are the routes to rebuild: with cfg nil, under the same
	// config; with cfg, the only routes in which cfg differs from the
	// applied one (the same names, matches and order: an edit of
	// included files).
	routes []string
	// instances: the routes' dynamic pools changed (their health checks
	// and their rollouts' releases follow).
	instances bool
}

// applyLocked is the apply sequence, the one place it is written. On
// error the table, cfg and its hash are unchanged (the rollouts have been
// synced with the new config: they hold its settings until the next
// apply). It returns how many instances left the table (they drain).
// p.mu held.
func (p *pipeline) applyLocked(ch change) (removedCount int, err error) {
	cfg := p.cfg
	if ch.cfg != nil {
		cfg = ch.cfg
		p.overrides = p.rollouts.SyncReleases(cfg.Routes, p.releaseOf)
		p.rollouts.SetWebhooks(cfg.Routes)
	}
	var removed []*balancer.Instance
	if ch.cfg != nil && ch.routes == nil {
		specs, err := p.specsLocked(cfg)
		if err != nil {
			return 0, err
		}
		if removed, err = p.router.Apply(specs); err != nil {
			return 0, fmt.Errorf("build routing table: %w", err)
		}
		p.cfg, p.appliedHash, p.byName = cfg, ch.hash, routeIndex(cfg)
		p.retainLocked(cfg)
		p.retireMirrorsLocked(cfg)
		p.retireConnsLocked()
		p.publish(p.router.Load().Routes())
		p.syncHealthLocked(nil)
		p.applied = true
	} else {
		if ch.instances {
			// What the pools hold decides the release: the rollout
			// answers first, and its weights go into the same table.
			for _, name := range ch.routes {
				if r, ok := p.routeLocked(name); ok && r.Rollout != nil {
					if o, ok := p.rollouts.Refresh(r, p.releaseOf); ok {
						p.overrides[name] = o
					}
				}
			}
		}
		specs := make([]balancer.RouteSpec, 0, len(ch.routes))
		for _, name := range ch.routes {
			i, ok := p.byName[name]
			if !ok {
				continue // the route left with the last reload
			}
			spec, err := p.specLocked(&cfg.Routes[i])
			if err != nil {
				return 0, err
			}
			specs = append(specs, spec)
		}
		if removed, err = p.router.Update(specs); err != nil {
			return 0, err
		}
		if ch.cfg != nil {
			p.cfg, p.appliedHash = cfg, ch.hash // byName holds: same routes, same order
			p.retainRoutesLocked(cfg, ch.routes)
			p.retireMirrorsLocked(cfg)
			p.retireConnsLocked()
		} else {
			p.retireMirrorsLocked(nil)
		}
		t := p.router.Load()
		for _, name := range ch.routes {
			if r := t.Route(name); r != nil {
				p.publish([]*balancer.Route{r})
			}
		}
		if ch.instances || ch.cfg != nil {
			p.syncHealthLocked(ch.routes)
		}
	}
	for _, in := range removed {
		p.health.Forget(in.Route, in.Pool, in.Addr) // gone from every route
	}
	p.drainLocked(removed)
	return len(removed), nil
}

// publish exports the weights of some routes of the live table (also
// called by the router's publisher for availability changes: no lock).
func (p *pipeline) publish(routes []*balancer.Route) {
	for _, r := range routes {
		for _, pl := range r.Pools {
			p.requests.SetWeights(r.Name, pl.Name, pl.Weight, pl.Effective)
		}
	}
}

// first applies the config the process starts with.
func (p *pipeline) first(cfg *config.Config, hash string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.applyLocked(change{cfg: cfg, hash: hash})
	return err
}

// errUnchanged: the file read is the one applied.
var errUnchanged = fmt.Errorf("unchanged")

// reload applies a config read from the file, whole or not at all:
// errUnchanged when it is the one applied (same hash and secrets), an
// error when it changes settings that need a restart or does not build.
func (p *pipeline) reload(cfg *config.Config, hash string) (removed int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Unchanged: the same file, and the same files it names (a rotated
	// force.secret_file is picked up by SIGHUP or the admin reload).
	if hash == p.appliedHash && sameSecrets(p.cfg, cfg) {
		return 0, errUnchanged
	}
	if diffs := config.RestartNeeded(p.cfg, cfg); len(diffs) > 0 {
		return 0, fmt.Errorf("this file changes settings that need a restart: %s; restart canaryd to apply it (nothing of it was applied, the running config keeps serving)", strings.Join(diffs, "; "))
	}
	if err := p.checkRolloutRemovalLocked(cfg); err != nil {
		return 0, err
	}
	p.warnManagedWeightsLocked(cfg)
	p.reconcileManualLocked(cfg)
	return p.applyLocked(change{cfg: cfg, hash: hash})
}

// reloadRoutes applies a config that differs from the applied one in
// the routes named only, each keeping its name, match and place (an
// edit of included files): the work is those routes', and a pass over
// the others that only reads, whatever their number. It refuses what
// reload refuses.
func (p *pipeline) reloadRoutes(cfg *config.Config, hash string, routes []string) (removed int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if hash == p.appliedHash && len(routes) == 0 {
		return 0, errUnchanged
	}
	changed := &config.Config{Routes: make([]config.Route, 0, len(routes))}
	for _, name := range routes {
		if i, ok := p.byName[name]; ok && i < len(cfg.Routes) && cfg.Routes[i].Name == name {
			changed.Routes = append(changed.Routes, cfg.Routes[i])
		}
	}
	if err := p.checkRolloutRemovalLocked(changed); err != nil {
		return 0, err
	}
	p.warnManagedWeightsLocked(changed)
	p.reconcileManualLocked(cfg)
	return p.applyLocked(change{cfg: cfg, hash: hash, routes: routes})
}

// SetOverride takes a rollout's new weights (rollout.Sink), from this
// member's controller or, in a cluster, from the leader's state, and
// rebuilds that route. An override older than the one held, or for a
// route whose rollout is gone, is dropped.
func (p *pipeline) SetOverride(route string, o rollout.Override) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.overrides[route]; ok && o.Seq <= old.Seq {
		return
	}
	if r, ok := p.routeLocked(route); !ok || r.Rollout == nil {
		return
	}
	p.overrides[route] = o
	if _, err := p.applyLocked(change{routes: []string{route}}); err != nil {
		p.log.Error("applying rollout weights failed", zap.String("route", route), zap.Error(err))
	}
}

// setPartitioned moves the routes whose rollout is under way to their
// stable pool (p true), or back to the cluster's weights.
func (p *pipeline) setPartitioned(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partitioned = cut
	var routes []string
	for name := range p.overrides {
		routes = append(routes, name)
	}
	if _, err := p.applyLocked(change{routes: routes}); err != nil {
		p.log.Error("applying the partition's weights failed", zap.Error(err))
	}
	if cut {
		p.log.Warn("cut off from the cluster for partition_timeout: routes with a rollout under way go to their stable pool on this member",
			zap.Strings("weights_served", servedWeights(p.router.Load())))
	} else {
		p.log.Info("back in touch with the cluster: serving its weights again", zap.Strings("weights_served", servedWeights(p.router.Load())))
	}
}

// routeLocked is the applied config's route called name.
func (p *pipeline) routeLocked(name string) (*config.Route, bool) {
	i, ok := p.byName[name]
	if !ok {
		return nil, false
	}
	return &p.cfg.Routes[i], true
}

// config is the applied config (never changed in place).
func (p *pipeline) config() *config.Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// version is the count of a route's weights set by hand.
func (p *pipeline) version(route string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.versions[route]
}

// allVersions copies every route's version.
func (p *pipeline) allVersions() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.versions))
	for k, v := range p.versions {
		out[k] = v
	}
	return out
}

// drainLocked waits, on a goroutine of its own, for removed instances to
// finish their in-flight requests (no new request reaches them: they are
// in no table any more), then closes their connections. One goroutine per
// change, not per instance. p.mu held (for the transports' list).
func (p *pipeline) drainLocked(removed []*balancer.Instance) {
	if len(removed) == 0 {
		return
	}
	transports := p.transportsLocked()
	timeout := p.static.Server.DrainTimeout.D()
	p.background.Add(1)
	go func() {
		defer p.background.Done()
		defer panics.Recover(p.onPanic, "instance drain")
		deadline := time.Now().Add(timeout)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for _, in := range removed {
			for in.InFlight() > 0 && time.Now().Before(deadline) {
				select {
				case <-tick.C:
				case <-p.stopping:
					return
				}
			}
			left := in.InFlight()
			closed := 0
			if !inUse(p.router.Load(), in.URL.Host) {
				for _, t := range transports {
					closed += t.CloseConnsTo(in.URL.Host)
				}
			}
			lvl := zap.InfoLevel
			if left > 0 {
				lvl = zap.WarnLevel
			}
			p.log.Log(lvl, "removed instance drained", zap.String("route", in.Route), zap.String("pool", in.Pool),
				zap.String("instance", in.Addr), zap.Int64("still_in_flight", left), zap.Int("connections_closed", closed))
		}
	}()
}

// inUse reports whether host:port is still an instance somewhere in t
// (the same address may serve another pool or route).
func inUse(t *balancer.Table, hostport string) bool {
	for _, r := range t.Routes() {
		for _, pl := range r.Pools {
			for _, in := range pl.Instances {
				if in.URL.Host == hostport {
					return true
				}
			}
		}
	}
	return false
}

// servedWeights is each route's weights as a table serves them (a
// rollout's or set by hand, not necessarily the file's): "web: blue=95
// green=5".
func servedWeights(t *balancer.Table) []string {
	var out []string
	for _, r := range t.Routes() {
		parts := make([]string, 0, len(r.Pools))
		for _, pl := range r.Pools {
			parts = append(parts, pl.Name+"="+config.Percent(pl.Weight).String())
		}
		out = append(out, r.Name+": "+strings.Join(parts, " "))
	}
	return out
}

// sameSecrets reports whether two configs carry the same force secrets,
// route by route.
func sameSecrets(a, b *config.Config) bool {
	if len(a.Routes) != len(b.Routes) {
		return false
	}
	for i := range a.Routes {
		if a.Routes[i].Force.Secret() != b.Routes[i].Force.Secret() {
			return false
		}
	}
	return true
}
