package metrics

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"canaryd/grpccode"

	"github.com/prometheus/client_golang/prometheus"
)

// DurationBuckets are the Prometheus histogram buckets of request
// durations, in seconds: HTTP latencies from half a millisecond to 10 s.
var DurationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NoPool is the pool label of requests no pool could take (every pool of
// the route without an available instance).
const NoPool = ""

// Requests holds the per-pool request metrics: the Prometheus series and
// the in-process windows. A pool's stats outlive reloads that keep the pool,
// so a window is not reset by a config edit.
type Requests struct {
	total     *prometheus.CounterVec
	preview   *prometheus.CounterVec
	grpc      *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	weight    *prometheus.GaugeVec
	effective *prometheus.GaugeVec

	mu    sync.Mutex
	pools map[poolKey]*PoolStats
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
		pools: map[poolKey]*PoolStats{},
		now:   time.Now,
	}
	reg.MustRegister(m.total, m.preview, m.grpc, m.duration, m.weight, m.effective)
	return m
}

// Pool returns the stats of a route's pool, creating them the first time.
// Use NoPool for requests that found no pool.
func (m *Requests) Pool(route, pool string) *PoolStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := poolKey{route, pool}
	if p := m.pools[k]; p != nil {
		return p
	}
	p := &PoolStats{
		Route: route, Pool: pool, m: m,
		win: newWindow(m.now()),
	}
	m.pools[k] = p
	return p
}

// Retain drops the stats and series of every pool not in keep (route →
// pools): what a reload removed.
func (m *Requests) Retain(keep map[string][]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	kept := map[poolKey]bool{}
	for r, ps := range keep {
		kept[poolKey{r, NoPool}] = true
		for _, p := range ps {
			kept[poolKey{r, p}] = true
		}
	}
	for k := range m.pools {
		if kept[k] {
			continue
		}
		delete(m.pools, k)
		labels := prometheus.Labels{"route": k.route, "pool": k.pool}
		m.total.DeletePartialMatch(labels)
		m.preview.DeletePartialMatch(labels)
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
	t := time.NewTicker(WindowResolution)
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
	pools := make([]*PoolStats, 0, len(m.pools))
	for _, p := range m.pools {
		pools = append(pools, p)
	}
	m.mu.Unlock()
	for _, p := range pools {
		p.win.snapshot(now)
	}
}

// PoolStats is one pool's request accounting. Observe is the request path.
type PoolStats struct {
	Route, Pool string

	m *Requests
	// codes and pcodes cache the children of canaryd_requests_total and
	// canaryd_preview_requests_total by status, allocated on the first
	// request of each kind (an idle pool does not pay for them).
	codes, pcodes atomic.Pointer[statusCounters]
	// duration is the pool's canaryd_request_duration_seconds child, made
	// on the first request: 15 buckets × 10,000 idle pools is memory for
	// nothing.
	duration atomic.Pointer[observer]
	// grpcCodes caches the children of canaryd_grpc_requests_total.
	grpcCodes atomic.Pointer[[grpccode.Count]atomic.Pointer[counter]]
	win       *window
}

type counter struct{ prometheus.Counter }

type observer struct{ prometheus.Observer }

// Observe records one request: its status as sent (499 when the client
// went away) and its duration. No lock and, once a status has been seen,
// no allocation.
func (p *PoolStats) Observe(status int, d time.Duration) {
	p.observe(status, status, d, false)
}

// observe counts status (as sent) in the Prometheus series and counted
// (the status canaryd judges by) in the window.
func (p *PoolStats) observe(status, counted int, d time.Duration, preview bool) {
	p.code(&p.codes, p.m.total, status).Inc()
	o := p.duration.Load()
	if o == nil {
		p.duration.CompareAndSwap(nil, &observer{p.m.duration.WithLabelValues(p.Route, p.Pool)})
		o = p.duration.Load()
	}
	o.Observe(d.Seconds())
	p.win.record(counted, d, preview)
	if preview {
		p.code(&p.pcodes, p.m.preview, status).Inc()
	}
}

// ObservePreview records one request that named this pool by the force
// header or cookie: counted as Observe does, and as a preview.
func (p *PoolStats) ObservePreview(status int, d time.Duration) {
	p.observe(status, status, d, true)
}

// ObserveGRPC records a gRPC call: status is the HTTP status sent (200
// for any call answered), code its grpc-status. A call that failed (its
// code in the error set) counts in the window, and so in rollouts, as the
// code's HTTP equivalent (UNAVAILABLE as 503...).
func (p *PoolStats) ObserveGRPC(status int, code grpccode.Code, failed bool, d time.Duration, preview bool) {
	counted := status
	if failed {
		counted = code.HTTPStatus()
	}
	p.observe(status, counted, d, preview)
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
		codes[code].CompareAndSwap(nil, &counter{p.m.grpc.WithLabelValues(p.Route, p.Pool, code.String())})
		c = codes[code].Load()
	}
	c.Inc()
}

type statusCounters [600]atomic.Pointer[counter]

func (p *PoolStats) code(cache *atomic.Pointer[statusCounters], vec *prometheus.CounterVec, status int) *counter {
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
	c := &counter{vec.WithLabelValues(p.Route, p.Pool, strconv.Itoa(status))}
	if !codes[status].CompareAndSwap(nil, c) {
		c = codes[status].Load()
	}
	return c
}

// Traffic is a pool's cumulative counts split by how its requests chose
// it: by the schedule or a sticky key (Weighted), or by naming the pool
// (Preview).
type Traffic struct {
	Weighted, Preview Counts
}

// All is every request of the pool.
func (t Traffic) All() Counts {
	c := t.Weighted
	c.Add(&t.Preview)
	return c
}

// Add adds o to t (Counts.Add, both halves).
func (t *Traffic) Add(o Traffic) {
	t.Weighted.Add(&o.Weighted)
	t.Preview.Add(&o.Preview)
}

// Sub returns t minus an earlier reading of the same pool.
func (t Traffic) Sub(earlier Traffic) Traffic {
	t.Weighted.sub(&earlier.Weighted)
	t.Preview.sub(&earlier.Preview)
	return t
}

// Traffic returns the pool's counts since its stats were created, exact
// to the request, split into weighted and preview.
func (p *PoolStats) Traffic() Traffic {
	now := p.m.now()
	return Traffic{Weighted: p.win.weighted.counts(p.win.created, now), Preview: p.win.preview.counts(p.win.created, now)}
}

// Now returns the counts since the stats were created, exact to the
// request. Subtract two of them (Sub) for an exact span, such as a rollout
// step.
func (p *PoolStats) Now() Counts { return p.win.now(p.m.now()) }

// Since returns the counts from t until now, to WindowResolution.
func (p *PoolStats) Since(t time.Time) Counts { return p.win.since(t, p.m.now()) }

// Last returns the counts of the last d, to WindowResolution.
func (p *PoolStats) Last(d time.Duration) Counts {
	now := p.m.now()
	return p.win.since(now.Add(-d), now)
}

// Sub returns c minus an earlier reading of the same pool.
func (c Counts) Sub(earlier Counts) Counts {
	c.sub(&earlier)
	return c
}

// Series returns the pool's traffic over the last `last` in spans of step
// (to WindowResolution), oldest first.
func (p *PoolStats) Series(last, step time.Duration) []Point { return p.win.series(last, step) }
