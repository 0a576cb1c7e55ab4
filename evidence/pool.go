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
	// went away first), its duration, and how the request came to the
	// pool (its class).
	Request(status int, d time.Duration, class Class)
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

// Class is how a request came to its pool; each is counted apart.
type Class uint8

// Classes of traffic.
const (
	// Weighted: by the schedule, a sticky key or the affinity cookie
	// (the traffic a weighted step judges).
	Weighted Class = iota
	// Preview: the request named its pool (force header or cookie).
	Preview
	// Targeted: a match rule chose the pool (a rollout's segment is
	// judged on it).
	Targeted
	// Propagated: a trusted peer's propagated version chose the pool:
	// the weighted pick of the hop before, continued. Shown as targeted,
	// judged with the weighted traffic (see rollout's judged).
	Propagated
)

// Observe records one weighted request: its status as sent (499 when the
// client went away) and its duration. No lock and no allocation once warm.
func (p *Pool) Observe(status int, d time.Duration) { p.observe(status, status, d, Weighted) }

// ObserveClass records one request of a class: counted as Observe does,
// and apart in its class.
func (p *Pool) ObserveClass(status int, d time.Duration, class Class) {
	p.observe(status, status, d, class)
}

// ObservePreview records one request that named this pool by the force
// header or cookie: counted as Observe does, and as a preview.
func (p *Pool) ObservePreview(status int, d time.Duration) { p.observe(status, status, d, Preview) }

// ObserveGRPC records a gRPC call: status is the HTTP status sent (200
// for any call answered), code its grpc-status. A call that failed (its
// code in the error set) counts in the window, and so in rollouts, as the
// code's HTTP equivalent (UNAVAILABLE as 503...).
func (p *Pool) ObserveGRPC(status int, code grpccode.Code, failed bool, d time.Duration, class Class) {
	counted := status
	if failed {
		counted = code.HTTPStatus()
	}
	p.observe(status, counted, d, class)
	if p.export != nil {
		p.export.GRPC(code)
	}
}

// observe exports status (as sent) and counts counted (the status canaryd
// judges by) in the window.
func (p *Pool) observe(status, counted int, d time.Duration, class Class) {
	if p.export != nil {
		p.export.Request(status, d, class)
	}
	p.win.record(counted, d, class)
}

// Snapshot keeps the window's counters as of now (once a second, by the
// owner of the pools).
func (p *Pool) Snapshot(now time.Time) { p.win.snapshot(now) }

// Traffic returns the pool's counts since its record was created, exact to
// the request, split by class.
func (p *Pool) Traffic() Traffic {
	now := p.now()
	return Traffic{Weighted: p.win.weighted.Counts(p.win.created, now), Preview: p.win.preview.Counts(p.win.created, now),
		Targeted: p.win.targeted.Counts(p.win.created, now), Propagated: p.win.propagated.Counts(p.win.created, now)}
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

// Traffic is a pool's cumulative counts split by how its requests came
// to it (Class): by the schedule, a sticky key or the affinity cookie
// (Weighted), by naming the pool (Preview), by a rule (Targeted) or by a
// propagated version (Propagated).
type Traffic struct {
	Weighted, Preview, Targeted, Propagated Counts
}

// All is every request of the pool.
func (t Traffic) All() Counts {
	c := t.Weighted
	c.Add(&t.Preview)
	c.Add(&t.Targeted)
	c.Add(&t.Propagated)
	return c
}

// Add adds o to t (Counts.Add, every class).
func (t *Traffic) Add(o Traffic) {
	t.Weighted.Add(&o.Weighted)
	t.Preview.Add(&o.Preview)
	t.Targeted.Add(&o.Targeted)
	t.Propagated.Add(&o.Propagated)
}

// Sub returns t minus an earlier reading of the same pool.
func (t Traffic) Sub(earlier Traffic) Traffic {
	t.Weighted.sub(&earlier.Weighted)
	t.Preview.sub(&earlier.Preview)
	t.Targeted.sub(&earlier.Targeted)
	t.Propagated.sub(&earlier.Propagated)
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
