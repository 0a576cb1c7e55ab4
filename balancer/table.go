// Package balancer holds canaryd's routing state: an immutable table of
// routes, pools and instances, compiled from specs and read by the proxy
// through one atomic pointer, and the picks made on it for every request.
//
// The table is never changed once published; a reload or an availability
// change builds a new one and swaps it in (Router). The only things written
// on the request path are atomic counters: the schedule cursor, round-robin
// cursors and in-flight counts.
package balancer

import (
	"fmt"
	"math/bits"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"canaryd/evidence"
)

// Slots is the length of a route's pool schedule and the number of sticky
// buckets: one slot per basis point of weight.
const Slots = 10000

// Policy chooses an instance inside a pool.
type Policy uint8

const (
	// RoundRobin cycles through the available instances.
	RoundRobin Policy = iota
	// LeastRequest takes the less loaded of two random instances (power of
	// two choices), which avoids herding onto one instance.
	LeastRequest
)

// RouteSpec describes one route to build. It is plain data.
type RouteSpec struct {
	Name         string
	Host         string // "" matches any host
	PathPrefix   string
	PreserveHost bool
	Policy       Policy
	Pools        []PoolSpec
	StickyHeader string // at most one of StickyHeader, StickyCookie
	StickyCookie string
	ForceHeader  string
	ForceCookie  string
	// ForceFrom restricts forcing to requests from these peers; nil: any.
	ForceFrom []netip.Prefix
	// ForceSecret, when set, must also be carried in ForceSecretHeader for
	// a request to force a pool.
	ForceSecret       string
	ForceSecretHeader string
	// StickyLow names the pool that owns the lowest sticky buckets (a
	// rollout's canary); default: the last pool listed.
	StickyLow string
	// MirrorPool names the pool that gets shadow copies of MirrorShare
	// basis points of the route's requests; "" for none. Mirror sends
	// them: carried into the Route.
	MirrorPool  string
	MirrorShare int
	Mirror      Mirror
	// Stats is the route's record of the requests no pool took, carried
	// into the Route.
	Stats *evidence.Pool
	// Rules send the requests they match to their pools, in order,
	// before the weighted pick.
	Rules []RuleSpec
	// Affinity, when set, is canaryd's own affinity cookie (instead of
	// StickyHeader and StickyCookie).
	Affinity *AffinitySpec
	// PropagateHeader carries the version of the pool chosen to the
	// instance, and from a trusted peer routes to the pool of that
	// version. "": none.
	PropagateHeader string
	// TrackStreams: the proxy keeps the route's long-lived requests, for a
	// rollback to end (rollout.rollback.close_streams_after); carried
	// into the Route. false: no request of the route is looked at.
	TrackStreams bool
}

// Mirror sends a route's shadow copies: package proxy's *Mirror, made by
// the table's builder and used by the proxy. The balancer carries it from
// the spec to the route untouched and compares it by identity; Close is
// what its maker calls when no table uses it any more.
type Mirror interface{ Close() }

// PoolSpec describes one pool of a route.
type PoolSpec struct {
	Name      string
	Weight    int // basis points; a route's pools sum to Slots
	Instances []*url.URL
	// PanicThreshold in percent: below this share of available instances
	// (but above none) the pool routes across all its instances. 0: off.
	PanicThreshold int
	// SlowStart ramps an instance's share up over this window after it
	// becomes available. 0: off.
	SlowStart time.Duration
	// Stats is the pool's record of its requests (its windows and
	// metrics), carried into the Pool, so the request path needs no lookup
	// to reach it.
	Stats *evidence.Pool
	// Transport reaches the pool's instances (its protocol and TLS); nil:
	// the proxy's default. Carried into the Pool, compared by identity.
	Transport http.RoundTripper
	// AwaitProbe: an instance that joins the pool once it serves starts
	// out of rotation, until health's first probe of it passes (a dynamic
	// pool with active probes: a new instance gets traffic only once it
	// answers). false: it joins at once, in slow start.
	AwaitProbe bool
	// Version the pool runs, as propagated (RouteSpec.PropagateHeader):
	// its version, or its name when it has none.
	Version string
	// Live: a propagated request may be routed to the pool even at
	// weight 0 (a rollout's pools while the rollout is live). A pool
	// with weight is live anyway.
	Live bool
}

// Table is an immutable, compiled set of routes.
type Table struct {
	routes []*Route // in match order: exact hosts first, longer prefixes first
	// byName and index hold positions in routes: a table that differs from
	// another by one recompiled route shares both (see Router.publish).
	byName map[string]int
	index  routeIndex
}

// Routes lists the routes in match order.
func (t *Table) Routes() []*Route { return t.routes }

// Route returns the route called name, or nil.
func (t *Table) Route(name string) *Route {
	if i, ok := t.byName[name]; ok {
		return t.routes[i]
	}
	return nil
}

// Match returns the route for a request's host (with or without port) and
// path: an exact host beats the catch-all, then the longest prefix wins.
func (t *Table) Match(host, path string) *Route {
	if i := t.index.match(stripPort(host), path); i >= 0 {
		return t.routes[i]
	}
	return nil
}

func stripPort(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h[i:], ']') < 0 {
		h = h[:i]
	}
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	return h
}

// Route is one compiled route.
type Route struct {
	Name         string
	Host         string
	PathPrefix   string
	PreserveHost bool
	// Pools in config order.
	Pools []*Pool
	// Stats is RouteSpec.Stats.
	Stats *evidence.Pool
	// MirrorPool is the pool that gets shadow copies (nil: none), and
	// Mirror RouteSpec.Mirror, which sends them.
	MirrorPool *Pool
	Mirror     Mirror

	mirrorShare  int
	mirrorCursor atomic.Uint64

	policy Policy
	// schedule[i] is the index of the pool that serves slot i of a cycle;
	// nil when no weighted pool has an available instance (every pick is
	// then nil: 503). It is the interleaving over one cycle: the shortest that
	// divides Slots, repeats the weights' period, and gives every pool a
	// whole number of rounds over its usable instances (90/10 over 4 + 1
	// instances: 40 slots), so a cycle costs what the weights and instances
	// need, not Slots. When no cycle shorter than Slots does, it is Slots
	// long. turn[i] is the instance (index in its pool) that serves slot i:
	// round robin over the pool's usable instances in the order its slots
	// come, decided here so that a pick moves one shared counter, not two.
	schedule []uint8
	turn     []uint32
	cycle    divisor // len(schedule), when shorter than Slots
	// sticky lays pools on the bucket line, newest (last listed) lowest.
	sticky       []bucketRange
	stickyHeader string
	stickyCookie string
	forceHeader  string
	forceCookie  string
	forceFrom    []netip.Prefix
	forceSecret  []byte
	// ForceSecretHeader is the canonical header that carries the secret
	// ("" when there is none); the proxy removes it before forwarding.
	ForceSecretHeader string
	// PropagateHeader is the canonical header the proxy stamps with the
	// chosen pool's version ("" when none).
	PropagateHeader string
	propagate       string // = PropagateHeader, read by picks
	// TrackStreams: the proxy keeps this route's streams (RouteSpec).
	TrackStreams bool
	rules        rules
	affinity     *affinity

	// The cursor is written by every request on every core; keep it off the
	// cache lines of the read-only fields above.
	_      [64]byte
	cursor atomic.Uint64
	_      [56]byte
}

type bucketRange struct {
	end  uint16 // exclusive
	pool uint8
}

// Pool is one compiled pool.
type Pool struct {
	Name string
	// Weight is the configured share in basis points.
	Weight int
	// Effective is the share in the schedule: Weight, or more when another
	// pool of the route has no available instance; 0 when this one has none.
	Effective int
	Instances []*Instance
	// Panic is true when too few instances are available (PanicThreshold):
	// picks then ignore availability and spread over all instances.
	Panic bool
	// Stats is PoolSpec.Stats.
	Stats *evidence.Pool
	// Transport is PoolSpec.Transport.
	Transport http.RoundTripper

	// Version is PoolSpec.Version; versionValue is it as a header
	// value, shared by every request stamped with it (read only).
	Version      string
	versionValue [1]string
	live         bool

	policy    Policy
	slowStart int64 // nanoseconds; 0: off
	_         [64]byte
	rr        atomic.Uint64
	_         [56]byte
}

// VersionValue is the pool's version as a header value (one shared
// slice: the caller must not change it).
func (p *Pool) VersionValue() []string { return p.versionValue[:] }

// Weighted reports whether the schedule gives this pool any traffic.
func (p *Pool) Weighted() bool { return p.Effective > 0 }

// Available counts the pool's available instances.
func (p *Pool) Available() int {
	n := 0
	for _, in := range p.Instances {
		if in.Available() {
			n++
		}
	}
	return n
}

// compile builds a table from specs, taking instances from get so that an
// instance keeps its state across tables. reuse returns the compiled route
// of the table before for a spec that compiles to the same thing (nil when
// there is none): an edit of one route recompiles that route only, and
// the others keep their state (their schedule cursor included).
func compile(specs []RouteSpec, get func(route, pool string, u *url.URL, awaitProbe bool) *Instance, reuse func(RouteSpec) *Route) (*Table, error) {
	t := &Table{byName: make(map[string]int, len(specs))}
	seen := make(map[string]bool, len(specs))
	for _, s := range specs {
		if seen[s.Name] {
			return nil, fmt.Errorf("route %q is defined twice", s.Name)
		}
		seen[s.Name] = true
		r := reuse(s)
		if r != nil {
			for _, ps := range s.Pools { // its instances are still in use
				for _, u := range ps.Instances {
					get(s.Name, ps.Name, u, ps.AwaitProbe)
				}
			}
		} else {
			var err error
			if r, err = compileRoute(s, get); err != nil {
				return nil, fmt.Errorf("route %q: %w", s.Name, err)
			}
		}
		t.routes = append(t.routes, r)
	}
	sort.SliceStable(t.routes, func(i, j int) bool {
		a, b := t.routes[i], t.routes[j]
		if (a.Host != "") != (b.Host != "") {
			return a.Host != ""
		}
		return len(a.PathPrefix) > len(b.PathPrefix)
	})
	for i, r := range t.routes {
		t.byName[r.Name] = i
	}
	t.index = buildIndex(t.routes)
	return t, nil
}

// with returns a table like t with one route replaced (same name, same
// host and prefix), sharing everything else.
func (t *Table) with(r *Route) *Table {
	i := t.byName[r.Name]
	routes := append([]*Route(nil), t.routes...)
	routes[i] = r
	return &Table{routes: routes, byName: t.byName, index: t.index}
}

// compileRoute builds one immutable route from its spec. It is one pass
// over the pools, a little over 80 lines: split, the steps would pass the
// half-built route around and read no better.
func compileRoute(s RouteSpec, get func(route, pool string, u *url.URL, awaitProbe bool) *Instance) (*Route, error) {
	if len(s.Pools) == 0 || len(s.Pools) > 255 {
		return nil, fmt.Errorf("%d pools; want 1 to 255", len(s.Pools))
	}
	r := &Route{
		Name: s.Name, Host: s.Host, PathPrefix: s.PathPrefix, PreserveHost: s.PreserveHost,
		Stats:        s.Stats,
		policy:       s.Policy,
		stickyHeader: http.CanonicalHeaderKey(s.StickyHeader), stickyCookie: s.StickyCookie,
		forceHeader: http.CanonicalHeaderKey(s.ForceHeader), forceCookie: s.ForceCookie,
		forceFrom: s.ForceFrom,
	}
	if s.ForceSecret != "" {
		r.forceSecret = []byte(s.ForceSecret)
		r.ForceSecretHeader = http.CanonicalHeaderKey(s.ForceSecretHeader)
	}
	sum := 0
	seen := map[string]bool{}
	for _, ps := range s.Pools {
		if seen[ps.Name] {
			return nil, fmt.Errorf("pool %q is defined twice", ps.Name)
		}
		seen[ps.Name] = true
		if ps.Weight < 0 || ps.Weight > Slots {
			return nil, fmt.Errorf("pool %q: weight %d bp out of range", ps.Name, ps.Weight)
		}
		// A pool may be empty: a dynamic one (DNS, registrations) before
		// its instances come or after they leave. It has no available
		// instance, so its share goes to the others, like a pool that is
		// all down.
		sum += ps.Weight
		p := &Pool{Name: ps.Name, Weight: ps.Weight, Stats: ps.Stats, Transport: ps.Transport, policy: s.Policy, slowStart: int64(ps.SlowStart),
			Version: ps.Version, live: ps.Live || ps.Weight > 0}
		if p.Version == "" {
			p.Version = p.Name
		}
		p.versionValue[0] = p.Version
		for _, u := range ps.Instances {
			p.Instances = append(p.Instances, get(s.Name, ps.Name, u, ps.AwaitProbe))
		}
		avail := p.Available()
		p.Panic = ps.PanicThreshold > 0 && avail > 0 && avail*100 < ps.PanicThreshold*len(p.Instances)
		r.Pools = append(r.Pools, p)
	}
	if sum != Slots {
		return nil, fmt.Errorf("weights sum to %d bp, want %d", sum, Slots)
	}
	eff := effectiveWeights(r.Pools)
	for i, p := range r.Pools {
		p.Effective = eff[i]
	}
	if anyPositive(eff) {
		r.schedule, r.turn = cycle(compactSchedule(eff), usable(r.Pools))
		if len(r.schedule) < Slots {
			r.cycle = newDivisor(len(r.schedule))
		}
	}
	// Bucket ranges, lowest first: StickyLow (or the last pool), then the
	// others from the end of the list. Raising the first range's weight only
	// ever moves users into it.
	order := make([]int, 0, len(r.Pools))
	for i := len(r.Pools) - 1; i >= 0; i-- {
		if r.Pools[i].Name == s.StickyLow {
			order = append([]int{i}, order...)
		} else {
			order = append(order, i)
		}
	}
	var end int
	for _, i := range order {
		end += eff[i]
		r.sticky = append(r.sticky, bucketRange{end: uint16(end), pool: uint8(i)})
	}
	if len(s.Rules) > 0 {
		var err error
		if r.rules, err = compileRules(s.Rules, r.Pools); err != nil {
			return nil, err
		}
	}
	if s.Affinity != nil {
		r.affinity = compileAffinity(s.Affinity, s.Name)
	}
	r.TrackStreams = s.TrackStreams
	if s.PropagateHeader != "" {
		r.PropagateHeader = http.CanonicalHeaderKey(s.PropagateHeader)
		r.propagate = r.PropagateHeader
	}
	if s.MirrorPool != "" {
		for _, p := range r.Pools {
			if p.Name == s.MirrorPool {
				r.MirrorPool = p
			}
		}
		if r.MirrorPool == nil {
			return nil, fmt.Errorf("mirror pool %q is not a pool of the route", s.MirrorPool)
		}
		if s.MirrorShare < 1 || s.MirrorShare > Slots {
			return nil, fmt.Errorf("mirror share %d bp out of range", s.MirrorShare)
		}
		r.mirrorShare, r.Mirror = s.MirrorShare, s.Mirror
	}
	return r, nil
}

// MirrorTake reports whether this request (of those eligible for
// mirroring) is one to copy. The share is exact, like the schedule's: of
// any 10,000 consecutive calls, MirrorShare say yes, evenly spread.
func (r *Route) MirrorTake() bool {
	if r.MirrorPool == nil {
		return false
	}
	n := r.mirrorCursor.Add(1)
	share := uint64(r.mirrorShare)
	return n*share/Slots != (n-1)*share/Slots
}

// Pick chooses an available instance of the pool, by its policy; nil
// when none is available. (A mirror's copies use it: they go to this pool
// whatever its weight.)
func (p *Pool) Pick() *Instance { return p.pick() }

// usable lists, per pool, the instances round robin takes turns over:
// the available ones (all of them when none is, or in panic mode).
func usable(pools []*Pool) [][]uint32 {
	out := make([][]uint32, len(pools))
	for i, p := range pools {
		for k, in := range p.Instances {
			if p.Panic || in.Available() {
				out[i] = append(out[i], uint32(k))
			}
		}
		if len(out[i]) == 0 {
			for k := range p.Instances {
				out[i] = append(out[i], uint32(k))
			}
		}
	}
	return out
}

// cycle repeats a schedule's period until every pool has had a whole
// number of rounds over its usable instances, within a length that
// divides Slots (Slots itself when nothing shorter does), and lays the
// round robin turns along it.
func cycle(period []uint8, usable [][]uint32) ([]uint8, []uint32) {
	per := make([]int, len(usable))
	for _, pi := range period {
		per[pi]++
	}
	n := len(period)
	for k := 1; k*n <= Slots; k++ {
		if (Slots/n)%k != 0 {
			continue
		}
		whole := true
		for i, u := range usable {
			whole = whole && (len(u) == 0 || (per[i]*k)%len(u) == 0) // an empty pool has no turns
		}
		if whole || k*n == Slots {
			n *= k
			break
		}
	}
	schedule := make([]uint8, n)
	for s := range schedule {
		schedule[s] = period[s%len(period)]
	}
	seen := make([]int, len(usable))
	turn := make([]uint32, n)
	for s, pi := range schedule {
		u := usable[pi]
		turn[s] = u[seen[pi]%len(u)]
		seen[pi]++
	}
	return schedule, turn
}

// effectiveWeights gives the share of pools that have no available instance
// to the other weighted pools, in proportion to their weights (largest
// remainder, so the result still sums to Slots). Weight 0 stays 0: a pool the
// operator set to 0 never takes traffic from the schedule. If no weighted
// pool is available, every share is 0.
func effectiveWeights(pools []*Pool) []int {
	eff := make([]int, len(pools))
	total := 0
	for i, p := range pools {
		if p.Weight > 0 && p.Available() > 0 {
			eff[i] = p.Weight
			total += p.Weight
		}
	}
	if total == 0 || total == Slots {
		return eff
	}
	type rem struct{ i, r int }
	var rems []rem
	given := 0
	for i, w := range eff {
		if w == 0 {
			continue
		}
		eff[i] = w * Slots / total
		given += eff[i]
		rems = append(rems, rem{i, w * Slots % total})
	}
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].r > rems[b].r })
	for k := 0; given < Slots; k++ {
		eff[rems[k%len(rems)].i]++
		given++
	}
	return eff
}

func anyPositive(xs []int) bool {
	for _, x := range xs {
		if x > 0 {
			return true
		}
	}
	return false
}

// compactSchedule is the period of smooth weighted round robin over Slots
// slots (nginx's algorithm): every step each pool gains its weight, the
// richest is picked and pays the total; over Slots steps each pool is
// picked exactly weight times, and in any window the count stays within
// about one pick of weight × window / Slots. The weights divided by their
// greatest common divisor (with Slots) give the same interleaving, which
// repeats every Slots/gcd slots; 90/10 repeats every 10. A period divides
// Slots, so any Slots consecutive picks still split exactly, and the
// schedule costs what the weights need, not Slots bytes (plus four per
// slot for the turns) for every route.
func compactSchedule(weights []int) []uint8 {
	g := Slots
	for _, w := range weights {
		if w > 0 {
			g = gcd(g, w)
		}
	}
	reduced := make([]int, len(weights))
	for i, w := range weights {
		reduced[i] = w / g
	}
	return swrr(reduced, Slots/g)
}

// divisor divides numbers under 2^32 by a fixed d without a division
// instruction (Lemire, Kaser and Kurz, "Faster remainder by direct
// computation", 2019): two multiplications.
type divisor struct {
	d, m uint64 // m = ceil(2^64 / d); 0 for d = 1
}

func newDivisor(d int) divisor {
	if d <= 1 {
		return divisor{d: 1}
	}
	return divisor{d: uint64(d), m: ^uint64(0)/uint64(d) + 1}
}

// divmod returns a/d and a%d, for a < 2^32.
func (v divisor) divmod(a uint64) (q, r uint64) {
	if v.m == 0 {
		return a, 0
	}
	q, _ = bits.Mul64(v.m, a)
	r, _ = bits.Mul64(v.m*a, v.d)
	return q, r
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// swrr is smooth weighted round robin over total slots for weights that
// sum to total.
func swrr(weights []int, total int) []uint8 {
	s := make([]uint8, total)
	cur := make([]int, len(weights))
	for slot := range s {
		best := -1
		for i, w := range weights {
			if w == 0 {
				continue
			}
			cur[i] += w
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		s[slot] = uint8(best)
	}
	return s
}
