package balancer

import (
	"crypto/subtle"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Pick chooses the pool and the instance for a request with these
// headers (the Cookie header included), from no particular peer: see
// Choose.
func (r *Route) Pick(h http.Header) (*Pool, *Instance) {
	if p := r.forced(h, ""); p != nil {
		return p, p.pick()
	}
	if r.propagate == "" && len(r.rules.list) == 0 {
		p, in, _, _ := r.weighted(h)
		return p, in
	}
	c := r.Choose(&Request{Header: h})
	return c.Pool, c.Instance
}

// PickFrom is Pick for a request from peer (its RemoteAddr, "host:port"),
// which a route that restricts forcing (ForceFrom) needs. It also reports
// whether the request named its pool (a preview) rather than being given
// one.
func (r *Route) PickFrom(h http.Header, peer string) (*Pool, *Instance, bool) {
	c := r.Choose(&Request{Header: h, Peer: peer})
	return c.Pool, c.Instance, c.Via == ViaForce
}

// Choose chooses the pool and the instance for one request, trying in
// turn:
//
//  1. force: a header or cookie naming a pool routes there, whatever its
//     weight; if that pool has no available instance the answer is no
//     instance (the caller says 503) rather than a silent fallback;
//  2. propagation: a trusted peer's header naming the version of a pool
//     that is live in the route;
//  3. rules, in order: the first whose conditions all hold;
//  4. affinity or sticky: canaryd's cookie, or the application's key,
//     gives a bucket, and the bucket's pool serves; a client without the
//     cookie is given a random bucket;
//  5. otherwise the next slot of the schedule.
//
// A propagated or rule pool with no available instance gives way to the
// steps after it (an operator's rule is not a client's explicit preview:
// serving someone beats a 503). A nil instance means nothing can serve
// the request. The pool is returned even then when one was chosen, for
// accounting.
func (r *Route) Choose(req *Request) Choice {
	if p := r.forced(req.Header, req.Peer); p != nil {
		return Choice{Pool: p, Instance: p.pick(), Via: ViaForce, NewBucket: -1}
	}
	if r.propagate != "" {
		if p := r.propagated(req); p != nil {
			if in := p.pick(); in != nil {
				return Choice{Pool: p, Instance: in, Via: ViaPropagated, NewBucket: -1}
			}
		}
	}
	if len(r.rules.list) > 0 {
		if rule := r.rules.match(req); rule != nil {
			if in := rule.Pool.pick(); in != nil {
				return Choice{Pool: rule.Pool, Instance: in, Via: ViaRule, Rule: rule, NewBucket: -1}
			}
		}
	}
	return r.pickWeighted(req.Header)
}

// NeedsClient reports whether a rule of the route reads the client's
// address (Request.Client).
func (r *Route) NeedsClient() bool { return r.rules.needsClient }

// propagated is the live pool whose version a trusted peer's propagation
// header names, nil when there is none.
func (r *Route) propagated(req *Request) *Pool {
	v := req.Header[r.propagate]
	if len(v) == 0 || v[0] == "" {
		return nil
	}
	if !req.TrustedPeer && (r.forceFrom == nil || !r.peerIn(req.Peer)) {
		return nil
	}
	for _, p := range r.Pools {
		if p.live && p.Version == v[0] {
			return p
		}
	}
	return nil
}

func (r *Route) pickWeighted(h http.Header) Choice {
	p, in, via, nb := r.weighted(h)
	return Choice{Pool: p, Instance: in, Via: via, NewBucket: nb}
}

// weighted is the weighted pick: affinity, sticky or the schedule. nb
// is the bucket drawn for a client without an affinity cookie, -1 when
// none was.
func (r *Route) weighted(h http.Header) (p *Pool, in *Instance, via Via, nb int) {
	nb = -1
	if r.schedule == nil {
		return nil, nil, ViaWeight, nb
	}
	switch {
	case r.affinity != nil:
		b, ok := r.affinity.bucket(h)
		if !ok {
			b = rand.IntN(Slots)
			nb = b
		}
		p, via = r.Pools[r.bucketPool(uint16(b))], ViaAffinity
		in = p.pick()
	case r.stickyHeader != "" || r.stickyCookie != "":
		if key, ok := r.stickyKey(h); ok {
			p, via = r.Pools[r.bucketPool(Bucket(key))], ViaSticky
			in = p.pick()
			break
		}
		p, in = r.next()
	default:
		p, in = r.next()
	}
	if in == nil {
		// The pool lost its last instance after this table was built; the
		// next table will redistribute its share. Until then take the
		// next pool.
		p, in = r.fallback(p, nil)
	}
	return p, in, via, nb
}

// next is the next slot of the schedule: its place in the Slots cycle
// (a constant modulus: a multiply and a shift), then in the route's
// shorter cycle, which divides it (a precomputed divisor, no division).
func (r *Route) next() (*Pool, *Instance) {
	slot := (r.cursor.Add(1) - 1) % Slots
	if len(r.schedule) != Slots {
		_, slot = r.cycle.divmod(slot)
	}
	p := r.Pools[r.schedule[slot]]
	if p.policy == LeastRequest {
		return p, p.leastRequest()
	}
	return p, p.pickFrom(int(r.turn[slot]), nil)
}

// PickExcept chooses another instance after failed could not be reached:
// first another available instance of the same pool, then, unless
// samePool (an explicit preview, which never falls back silently), an
// instance of another weighted pool. Nil when there is none.
func (r *Route) PickExcept(pool *Pool, failed *Instance, samePool bool) (*Pool, *Instance) {
	if pool != nil {
		if in := pool.pickExcept(failed); in != nil {
			return pool, in
		}
	}
	if samePool {
		return pool, nil
	}
	return r.fallback(pool, failed)
}

func (r *Route) fallback(skip *Pool, failed *Instance) (*Pool, *Instance) {
	for _, p := range r.Pools {
		if p == skip || !p.Weighted() {
			continue
		}
		if in := p.pickExcept(failed); in != nil {
			return p, in
		}
	}
	return nil, nil
}

// Forced returns the pool named by the force header or cookie, if any,
// for a route that does not restrict forcing (see PickFrom).
func (r *Route) Forced(h http.Header) *Pool { return r.forced(h, "") }

func (r *Route) forced(h http.Header, peer string) *Pool {
	name := r.forceName(h)
	if name == "" || !r.mayForce(h, peer) {
		return nil
	}
	for _, p := range r.Pools {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// mayForce applies the route's restrictions on forcing: the peer must be
// in ForceFrom, and the secret must match (compared in constant time, so
// its bytes cannot be guessed one by one from answer times).
func (r *Route) mayForce(h http.Header, peer string) bool {
	if r.forceFrom != nil && !r.peerIn(peer) {
		return false
	}
	if r.forceSecret != nil {
		v := h[r.ForceSecretHeader]
		if len(v) != 1 || subtle.ConstantTimeCompare([]byte(v[0]), r.forceSecret) != 1 {
			return false
		}
	}
	return true
}

// peerIn reports whether peer ("host:port") is in force.allow_from.
func (r *Route) peerIn(peer string) bool {
	ap, err := netip.ParseAddrPort(peer)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	for _, p := range r.forceFrom {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (r *Route) forceName(h http.Header) string {
	var name string
	if r.forceHeader != "" {
		if v := h[r.forceHeader]; len(v) > 0 {
			name = v[0]
		}
	}
	if name == "" && r.forceCookie != "" {
		name, _ = cookieValue(h, r.forceCookie)
	}
	return name
}

func (r *Route) stickyKey(h http.Header) (string, bool) {
	if r.stickyHeader != "" {
		if v := h[r.stickyHeader]; len(v) > 0 && v[0] != "" {
			return v[0], true
		}
		return "", false
	}
	if r.stickyCookie != "" {
		return cookieValue(h, r.stickyCookie)
	}
	return "", false
}

func (r *Route) bucketPool(b uint16) uint8 {
	for _, br := range r.sticky {
		if b < br.end {
			return br.pool
		}
	}
	return r.sticky[len(r.sticky)-1].pool
}

// Bucket hashes a sticky key to 0..Slots-1 with FNV-1a and a final mix, so
// that similar keys (user-1, user-2) land far apart. It is stable across
// processes and versions: replicas agree, and a restart moves nobody.
func Bucket(key string) uint16 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return uint16(h % Slots)
}

// cookieValue finds a cookie in the Cookie headers without allocating
// (http.Request.Cookie parses and allocates every cookie).
func cookieValue(h http.Header, name string) (string, bool) {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			k, v, ok := strings.Cut(part, "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, v != ""
		}
	}
	return "", false
}

func (p *Pool) pick() *Instance {
	if p.policy == LeastRequest {
		return p.leastRequest()
	}
	return p.pickExcept(nil)
}

// pickExcept is round robin over usable instances. With skip set (a retry
// after skip refused the connection) it scans on from skip without moving
// the shared cursor: moving it would hand the next request to the instance
// that just failed. An instance in slow start may decline its turn; if every
// candidate declines, the first one takes it.
func (p *Pool) pickExcept(skip *Instance) *Instance {
	n := len(p.Instances)
	if n == 0 {
		return nil // a dynamic pool whose instances have not come yet
	}
	var i int
	if skip == nil {
		i = int((p.rr.Add(1) - 1) % uint64(n))
	} else {
		for k, in := range p.Instances {
			if in == skip {
				i = k + 1
				break
			}
		}
	}
	return p.pickFrom(i, skip)
}

// pickFrom takes instance i if it is usable, else the next usable one.
func (p *Pool) pickFrom(i int, skip *Instance) *Instance {
	n := len(p.Instances)
	var now int64
	var declined *Instance
	for k := 0; k < n; k++ {
		if i >= n {
			i = 0
		}
		if in := p.Instances[i]; in != skip && (p.Panic || in.Available()) {
			if p.rampAccepts(in, &now) {
				return in
			}
			if declined == nil {
				declined = in
			}
		}
		i++
	}
	return declined
}

// leastRequest is the power of two choices: the less loaded of two random
// usable instances. It needs no shared state but the in-flight counters.
func (p *Pool) leastRequest() *Instance {
	n := len(p.Instances)
	if n <= 1 {
		return p.pickExcept(nil)
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	var now int64
	a, b := p.Instances[i], p.Instances[j]
	okA := (p.Panic || a.Available()) && p.rampAccepts(a, &now)
	okB := (p.Panic || b.Available()) && p.rampAccepts(b, &now)
	switch {
	case okA && okB:
		if b.InFlight() < a.InFlight() {
			return b
		}
		return a
	case okA:
		return a
	case okB:
		return b
	}
	return p.pickExcept(nil)
}

// rampAccepts implements slow start: an instance that became available t
// ago, within the pool's window w, takes its turn with probability t/w.
// *now caches the clock for one pick; it is read only for ramping
// instances, so steady state costs one atomic load.
func (p *Pool) rampAccepts(in *Instance, now *int64) bool {
	if p.slowStart == 0 {
		return true
	}
	start := in.RampStart()
	if start == 0 {
		return true
	}
	if *now == 0 {
		*now = time.Now().UnixNano()
	}
	elapsed := *now - start
	if elapsed >= p.slowStart {
		in.EndRamp(start)
		return true
	}
	return elapsed > 0 && rand.Int64N(p.slowStart) < elapsed
}
