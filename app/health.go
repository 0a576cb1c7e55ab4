package app

import (
	"net/http"

	"canaryd/balancer"
	"canaryd/config"
	"canaryd/evidence"
	"canaryd/health"
	"canaryd/metrics"
	"canaryd/proxy"
	"canaryd/upstream"

	"go.uber.org/zap"
)

// healthConfig turns a pool's effective health block into health.Config.
func healthConfig(h config.Health) health.Config {
	lo, hi := h.Active.ExpectedRange()
	return health.Config{
		ProbePath:         h.Active.Path,
		GRPC:              h.Active.GRPC,
		GRPCService:       h.Active.GRPCService,
		Interval:          h.Active.Interval.D(),
		UnhealthyInterval: h.Active.UnhealthyInterval.D(),
		Timeout:           h.Active.Timeout.D(),
		Rise:              h.Active.Rise,
		Fall:              h.Active.Fall,
		StatusLo:          lo,
		StatusHi:          hi,
		JitterPercent:     *h.Active.Jitter,
		Passive: upstream.Passive{
			ConsecutiveFailures: *h.Passive.ConsecutiveFailures,
			Consecutive5xx:      h.Passive.Consecutive5xx,
			EjectFor:            h.Passive.EjectFor.D(),
			MaxEjectFor:         h.Passive.MaxEjectFor.D(),
			MaxEjectedPercent:   *h.Passive.MaxEjectedPercent,
		},
	}
}

// syncHealthLocked hands the instances of the live table to the checker:
// each target is the balancer's own record of the instance, where health
// keeps its state, so the request path needs no map from one to the
// other. routes nil: every route (a new config); else those routes only
// (a dynamic pool's change, at any number of routes). Called with the
// table for p.cfg live. p.mu held.
func (p *pipeline) syncHealthLocked(routes []string) {
	cfg := p.cfg
	live := p.router.Load()
	var targets []health.Target
	add := func(r *config.Route) {
		route := live.Route(r.Name)
		if route == nil {
			return
		}
		for _, pl := range route.Pools {
			var cp config.Pool
			for _, q := range r.Pools {
				if q.Name == pl.Name {
					cp = q
				}
			}
			hc := healthConfig(r.PoolHealth(cp))
			if conn, err := p.connForLocked(cp); err == nil && conn != nil {
				hc.Transport = conn.probe // made by specLocked already
			}
			for _, in := range pl.Instances {
				targets = append(targets, health.Target{Route: r.Name, Pool: pl.Name, Addr: in.Addr, URL: in.URL, Config: hc, Instance: in})
			}
		}
	}
	if routes == nil {
		for i := range cfg.Routes {
			add(&cfg.Routes[i])
		}
		p.checker.Sync(targets)
		return
	}
	pools := make(map[string][]string, len(routes))
	for _, name := range routes {
		if r, ok := p.routeLocked(name); ok {
			add(r)
			for _, cp := range r.Pools {
				pools[name] = append(pools[name], cp.Name)
			}
		}
	}
	p.checker.SyncPools(pools, targets)
}

// outcomes is the proxy's Observer: it feeds the request metrics, passive
// health and the access log. It runs on every request: a type assertion to
// reach the pool's cached metrics, and atomics on the instance's own
// record for health.
type outcomes struct{ s *Server }

func (o outcomes) Observe(out *proxy.Outcome) {
	var stats *evidence.Pool
	if out.Pool != nil {
		stats = out.Pool.Stats
	} else if out.Route != nil {
		stats = out.Route.Stats
	}
	switch {
	case stats == nil:
	case out.IsGRPC:
		stats.ObserveGRPC(out.Status, out.GRPC, out.GRPCFailed, out.Duration, classOf(out))
	default:
		stats.ObserveClass(out.Status, out.Duration, classOf(out))
	}
	if o.s.accessLog != nil {
		o.s.logAccess(out)
	}
	if out.Instance != nil {
		o.s.checker.Observe(out.Instance, out.Counted(), out.GatewayFailure(), out.Status == proxy.StatusClientClosed)
	}
	if out.Unreachable != nil {
		o.s.checker.Observe(out.Unreachable, http.StatusBadGateway, true, false)
	}
}

// classOf is how a request came to its pool, as its evidence counts it.
func classOf(out *proxy.Outcome) evidence.Class {
	switch {
	case out.Forced:
		return evidence.Preview
	case out.Via == balancer.ViaPropagated:
		return evidence.Propagated
	case out.Via.Targeted():
		return evidence.Targeted
	}
	return evidence.Weighted
}

// routedBy is the access log's reason for the pool: weight, sticky (the
// application's key), affinity (canaryd's cookie), rule:NAME, force or
// propagated.
func routedBy(out *proxy.Outcome) string {
	if out.Via == balancer.ViaRule && out.Rule != nil {
		return "rule:" + out.Rule.Name
	}
	return out.Via.String()
}

// logAccess writes one request's line: one in access_log.sample, and
// every answer >= 500 (a failed gRPC call among them).
func (s *Server) logAccess(out *proxy.Outcome) {
	if n := s.static.AccessLog.Sample; n > 1 && out.Counted() < 500 && s.accessSeq.Add(1)%uint64(n) != 0 {
		return
	}
	ce := s.accessLog.Check(zap.InfoLevel, "request")
	if ce == nil {
		return
	}
	pool, inst := "", ""
	if out.Pool != nil {
		pool = out.Pool.Name
	}
	if out.Instance != nil {
		inst = out.Instance.Addr
	}
	fields := []zap.Field{
		zap.String("route", out.Route.Name), zap.String("pool", pool), zap.String("instance", inst),
		// Seconds as a number, so log tools can sum and compare them.
		zap.Int("status", out.Status), zap.Float64("duration", out.Duration.Seconds()), zap.Int64("bytes", out.Bytes),
		zap.String("request_id", out.RequestID),
	}
	if out.Pool != nil {
		fields = append(fields, zap.String("routed_by", routedBy(out)))
	}
	if r := out.Request; r != nil {
		fields = append(fields, zap.String("method", r.Method), zap.String("host", r.Host), zap.String("path", r.URL.Path),
			zap.String("query", r.URL.RawQuery), zap.String("proto", r.Proto), zap.String("remote", r.RemoteAddr),
			zap.String("user_agent", r.UserAgent()), zap.Int64("request_bytes", r.ContentLength))
	}
	if out.IsGRPC {
		fields = append(fields, zap.Stringer("grpc_status", out.GRPC))
	}
	if out.Err != nil {
		fields = append(fields, zap.Error(out.Err))
	}
	ce.Write(fields...)
}

// healthEvents logs health transitions once each and keeps the metrics.
type healthEvents struct {
	log     *zap.Logger
	metrics *metrics.Health
	router  *balancer.Router
	weights func(route string)
}

func (e healthEvents) Transition(t health.Transition) {
	e.weights(t.Route) // the transition moved shares between the route's pools
	fields := []zap.Field{
		zap.String("route", t.Route), zap.String("pool", t.Pool), zap.String("instance", t.Addr),
		zap.Stringer("source", t.Source), zap.String("reason", t.Reason),
	}
	if r := e.router.Load().Route(t.Route); r != nil {
		for _, p := range r.Pools {
			if p.Name == t.Pool {
				fields = append(fields, zap.Int("pool_available", p.Available()), zap.Int("pool_instances", len(p.Instances)), zap.Bool("pool_panic", p.Panic))
			}
		}
	}
	if t.Up {
		e.log.Info("instance back in rotation", fields...)
		return
	}
	if t.Source == health.Passive {
		e.metrics.Ejected(t.Route, t.Pool, t.Addr)
		fields = append(fields, zap.Stringer("ejected_for", t.EjectedFor)) // "30s", not a bare 30
		e.log.Warn("instance ejected", fields...)
		return
	}
	e.log.Warn("instance out of rotation", fields...)
}

func (e healthEvents) EjectionRefused(t health.Target, reason string) {
	e.log.Warn("instance failing but kept in rotation", zap.String("route", t.Route), zap.String("pool", t.Pool),
		zap.String("instance", t.Addr), zap.String("reason", reason))
}
