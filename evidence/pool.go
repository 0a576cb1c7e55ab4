package evidence

import (
	"time"

	"canaryd/grpccode"
)

// Exporter passes a pool's requests on beyond the process (package
// metrics: Prometheus). It is called on the request path: no lock, no
// allocation once warm.
type Exporter interface {
	// Request is one answer: status as sent to the client (499 when it
	// went away first), its duration, and whether the request named its
	// pool (a preview).
	Request(status int, d time.Duration, preview bool)
	// GRPC is a gRPC call's grpc-status (after Request).
	GRPC(code grpccode.Code)
}

// Pool is one pool's evidence, the record the request path writes: the
// table carries it (balancer's Pool.Stats), so the request that picked the
// pool reaches it without a lookup. It outlives reloads that keep the
// pool, so a window is not reset by a config edit.
type Pool struct {
	Route, Pool string

	win    *window
	now    func() time.Time
	export Exporter // nil: nothing leaves the process
}

// NewPool returns a pool's record, created at now(); export may be nil.
func NewPool(route, pool string, now func() time.Time, export Exporter) *Pool {
	return &Pool{Route: route, Pool: pool, win: newWindow(now()), now: now, export: export}
}

// Observe records one request: its status as sent (499 when the client
// went away) and its duration. No lock and no allocation once warm.
func (p *Pool) Observe(status int, d time.Duration) { p.observe(status, status, d, false) }

// ObservePreview records one request that named this pool by the force
// header or cookie: counted as Observe does, and as a preview.
func (p *Pool) ObservePreview(status int, d time.Duration) { p.observe(status, status, d, true) }

// ObserveGRPC records a gRPC call: status is the HTTP status sent (200
// for any call answered), code its grpc-status. A call that failed (its
// code in the error set) counts in the window, and so in rollouts, as the
// code's HTTP equivalent (UNAVAILABLE as 503...).
func (p *Pool) ObserveGRPC(status int, code grpccode.Code, failed bool, d time.Duration, preview bool) {
	counted := status
	if failed {
		counted = code.HTTPStatus()
	}
	p.observe(status, counted, d, preview)
	if p.export != nil {
		p.export.GRPC(code)
	}
}

// observe exports status (as sent) and counts counted (the status canaryd
// judges by) in the window.
func (p *Pool) observe(status, counted int, d time.Duration, preview bool) {
	if p.export != nil {
		p.export.Request(status, d, preview)
	}
	p.win.record(counted, d, preview)
}

// Snapshot keeps the window's counters as of now (once a second, by the
// owner of the pools).
func (p *Pool) Snapshot(now time.Time) { p.win.snapshot(now) }

// Traffic returns the pool's counts since its record was created, exact to
// the request, split into weighted and preview.
func (p *Pool) Traffic() Traffic {
	now := p.now()
	return Traffic{Weighted: p.win.weighted.Counts(p.win.created, now), Preview: p.win.preview.Counts(p.win.created, now)}
}

// Now returns the counts since the record was created, exact to the
// request. Subtract two of them (Sub) for an exact span, such as a rollout
// step.
func (p *Pool) Now() Counts { return p.win.now(p.now()) }

// Since returns the counts from t until now, to WindowResolution.
func (p *Pool) Since(t time.Time) Counts { return p.win.since(t, p.now()) }

// Last returns the counts of the last d, to WindowResolution.
func (p *Pool) Last(d time.Duration) Counts {
	now := p.now()
	return p.win.since(now.Add(-d), now)
}

// Series returns the pool's traffic over the last `last` in spans of step
// (to WindowResolution), oldest first.
func (p *Pool) Series(last, step time.Duration) []Point { return p.win.series(last, step) }

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

// Shadow is a route's shadow traffic to one pool, cumulative.
type Shadow struct {
	// Copies are the copies' answers, Primaries the real ones to the same
	// requests.
	Copies, Primaries Counts
	// Compared answers, and the Mismatches among them.
	Compared, Mismatches uint64
}

// Add adds o to s.
func (s *Shadow) Add(o Shadow) {
	s.Copies.Add(&o.Copies)
	s.Primaries.Add(&o.Primaries)
	s.Compared += o.Compared
	s.Mismatches += o.Mismatches
}

// Sub returns s minus an earlier reading of the same stats.
func (s Shadow) Sub(earlier Shadow) Shadow {
	s.Copies.sub(&earlier.Copies)
	s.Primaries.sub(&earlier.Primaries)
	s.Compared -= earlier.Compared
	s.Mismatches -= earlier.Mismatches
	return s
}
