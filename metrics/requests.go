package metrics

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"canaryd/evidence"
	"canaryd/grpccode"

	"github.com/prometheus/client_golang/prometheus"
)

// DurationBuckets are the Prometheus histogram buckets of request
// durations, in seconds: HTTP latencies from half a millisecond to 10 s.
var DurationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NoPool is the pool label of requests no pool could take (every pool of
// the route without an available instance).
const NoPool = ""

// Requests holds the per-pool request records (evidence.Pool: the
// in-process windows) and exports them as Prometheus series. A pool's
// record outlives reloads that keep the pool, so a window is not reset by
// a config edit.
type Requests struct {
	total     *prometheus.CounterVec
	preview   *prometheus.CounterVec
	targeted  *prometheus.CounterVec
	grpc      *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	weight    *prometheus.GaugeVec
	effective *prometheus.GaugeVec

	// mu guards pools. now is the clock of the records (a test's own).
	mu    sync.Mutex
	pools map[poolKey]*evidence.Pool
	now   func() time.Time
}

type poolKey struct{ route, pool string }

// NewRequests registers the request metrics on reg.
func NewRequests(reg prometheus.Registerer) *Requests {
	m := &Requests{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_requests_total",
			Help: "Requests by route, pool and status code sent to the client (499: the client went away first).",
		}, []string{"route", "pool", "code"}),
		preview: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_preview_requests_total",
			Help: "Requests that named their pool by the force header or cookie (a preview), by route, pool and status code; also counted in canaryd_requests_total.",
		}, []string{"route", "pool", "code"}),
		targeted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_targeted_requests_total",
			Help: "Requests routed to their pool by a match rule (routes[].rules, a rollout segment) or a propagated version (routes[].propagate), by route, pool and status code; also counted in canaryd_requests_total.",
		}, []string{"route", "pool", "code"}),
		grpc: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_grpc_requests_total",
			Help: "gRPC calls (answers of content type application/grpc) by route, pool and grpc-status name (17 values); also counted in canaryd_requests_total, by their HTTP status.",
		}, []string{"route", "pool", "grpc_code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "canaryd_request_duration_seconds",
			Help:    "Time from receiving a request to the end of its answer, by route and pool.",
			Buckets: DurationBuckets,
		}, []string{"route", "pool"}),
		weight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "canaryd_pool_weight",
			Help: "The pool's weight in percent, as configured or set by a rollout.",
		}, []string{"route", "pool"}),
		effective: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "canaryd_pool_effective_weight",
			Help: "The pool's share of the schedule in percent, after the shares of pools without available instances moved.",
		}, []string{"route", "pool"}),
		pools: map[poolKey]*evidence.Pool{},
		now:   time.Now,
	}
	reg.MustRegister(m.total, m.preview, m.targeted, m.grpc, m.duration, m.weight, m.effective)
	return m
}

// Pool returns the record of a route's pool, creating it the first time.
// Use NoPool for requests that found no pool.
func (m *Requests) Pool(route, pool string) *evidence.Pool {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := poolKey{route, pool}
	if p := m.pools[k]; p != nil {
		return p
	}
	p := evidence.NewPool(route, pool, func() time.Time { return m.now() }, &poolSeries{route: route, pool: pool, m: m})
	m.pools[k] = p
	return p
}

// Retain drops the stats and series of every pool not in keep (route →
// pools): what a reload removed.
func (m *Requests) Retain(keep map[string][]string) { m.retain(keep, false) }

// RetainIn is Retain for the routes of keep only: the pools of those
// routes that keep does not list go, other routes' stay (an edit of some
// routes, at any number of routes).
func (m *Requests) RetainIn(keep map[string][]string) { m.retain(keep, true) }

func (m *Requests) retain(keep map[string][]string, only bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.pools {
		ps, named := keep[k.route]
		if (only && !named) || (named && (k.pool == NoPool || slices.Contains(ps, k.pool))) {
			continue
		}
		delete(m.pools, k)
		labels := prometheus.Labels{"route": k.route, "pool": k.pool}
		m.total.DeletePartialMatch(labels)
		m.preview.DeletePartialMatch(labels)
		m.targeted.DeletePartialMatch(labels)
		m.grpc.DeletePartialMatch(labels)
		m.duration.Delete(labels)
		m.weight.Delete(labels)
		m.effective.Delete(labels)
	}
}

// SetWeights records a pool's configured and effective weights (basis
// points).
func (m *Requests) SetWeights(route, pool string, weight, effective int) {
	m.weight.WithLabelValues(route, pool).Set(float64(weight) / 100)
	m.effective.WithLabelValues(route, pool).Set(float64(effective) / 100)
}

// Run snapshots every pool's window once per WindowResolution until ctx
// ends. One goroutine serves all pools.
func (m *Requests) Run(ctx context.Context) {
	t := time.NewTicker(evidence.WindowResolution)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.snapshot(now)
		}
	}
}

func (m *Requests) snapshot(now time.Time) {
	m.mu.Lock()
	pools := make([]*evidence.Pool, 0, len(m.pools))
	for _, p := range m.pools {
		pools = append(pools, p)
	}
	m.mu.Unlock()
	for _, p := range pools {
		p.Snapshot(now)
	}
}

// poolSeries is one pool's Prometheus children: the Exporter of its
// evidence.Pool.
type poolSeries struct {
	route, pool string
	m           *Requests
	// codes and pcodes cache the children of canaryd_requests_total and
	// canaryd_preview_requests_total by status, allocated on the first
	// request of each kind (an idle pool does not pay for them).
	// tcodes, canaryd_targeted_requests_total's.
	codes, pcodes, tcodes atomic.Pointer[statusCounters]
	// duration is the pool's canaryd_request_duration_seconds child, made
	// on the first request: 15 buckets × 10,000 idle pools is memory for
	// nothing.
	duration atomic.Pointer[observer]
	// grpcCodes caches the children of canaryd_grpc_requests_total.
	grpcCodes atomic.Pointer[[grpccode.Count]atomic.Pointer[counter]]
}

type counter struct{ prometheus.Counter }

type observer struct{ prometheus.Observer }

// Request counts one answer: no lock and, once a status has been seen, no
// allocation.
func (p *poolSeries) Request(status int, d time.Duration, class evidence.Class) {
	p.code(&p.codes, p.m.total, status).Inc()
	o := p.duration.Load()
	if o == nil {
		p.duration.CompareAndSwap(nil, &observer{p.m.duration.WithLabelValues(p.route, p.pool)})
		o = p.duration.Load()
	}
	o.Observe(d.Seconds())
	switch class {
	case evidence.Preview:
		p.code(&p.pcodes, p.m.preview, status).Inc()
	case evidence.Targeted, evidence.Propagated:
		p.code(&p.tcodes, p.m.targeted, status).Inc()
	}
}

// GRPC counts a gRPC call by its grpc-status.
func (p *poolSeries) GRPC(code grpccode.Code) {
	codes := p.grpcCodes.Load()
	if codes == nil {
		p.grpcCodes.CompareAndSwap(nil, new([grpccode.Count]atomic.Pointer[counter]))
		codes = p.grpcCodes.Load()
	}
	if code >= grpccode.Count {
		code = grpccode.Unknown
	}
	c := codes[code].Load()
	if c == nil {
		codes[code].CompareAndSwap(nil, &counter{p.m.grpc.WithLabelValues(p.route, p.pool, code.String())})
		c = codes[code].Load()
	}
	c.Inc()
}

type statusCounters [600]atomic.Pointer[counter]

func (p *poolSeries) code(cache *atomic.Pointer[statusCounters], vec *prometheus.CounterVec, status int) *counter {
	codes := cache.Load()
	if codes == nil {
		cache.CompareAndSwap(nil, new(statusCounters))
		codes = cache.Load()
	}
	if status < 0 || status >= len(codes) {
		status = 0 // "0": a status no HTTP server sends
	}
	if c := codes[status].Load(); c != nil {
		return c
	}
	c := &counter{vec.WithLabelValues(p.route, p.pool, strconv.Itoa(status))}
	if !codes[status].CompareAndSwap(nil, c) {
		c = codes[status].Load()
	}
	return c
}
