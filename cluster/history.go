package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"canaryd/evidence"
)

// The cluster's recent traffic, for the dashboard's charts: the leader
// samples, once a second, the sums of every member's counts (its own live
// ones and the others' last flushes) of the routes whose rollout is under
// way, and keeps historyLength of them; followers read the chart it writes
// from them (Series). A chart drawn from any member then shows the whole
// cluster's traffic, as the leader's analysis judges it.
const (
	historyEvery  = time.Second
	historyLength = 10 * time.Minute
	// historySlots is the ring's size: one more sample than a full
	// historyLength of them, so that a ten-minute span has both ends.
	historySlots = int(historyLength/historyEvery) + 1
)

// history is guarded by Cluster.mu.
type history map[poolKey]*poolHistory

// poolHistory costs what it holds. It keeps the last cumulative counts
// (one evidence.Counts, to take the next second's difference from) and,
// per second, only what changed in it: requests, errors, and the latency
// buckets that moved, sparse. A pool with a trickle of traffic holds a few
// bytes a second; a busy one at most its buckets. The ring is a slice that
// grows to historySlots and is then overwritten in place, each slot's
// bucket slice reused, so a steady state makes no garbage. (It kept a
// whole 370-bucket Counts a second, 1.8 MB a pool for ten minutes, and
// re-sliced its ring, so the arrays it dropped were garbage.)
type poolHistory struct {
	last  evidence.Counts // cumulative, at the newest sample
	ring  []second        // oldest at head once full
	head  int             // the oldest slot once the ring is full
	valid bool            // last holds a sample
}

// second is one sample's difference from the one before; the oldest
// sample only marks where the history starts (no difference).
type second struct {
	at       time.Time
	requests uint64
	errors   uint64
	buckets  []bucketDelta
}

type bucketDelta struct {
	i uint16
	n uint32 // a second's requests in one bucket (capped, never wraps)
}

// add records the cumulative counts at now.
func (h *poolHistory) add(now time.Time, c *evidence.Counts) {
	var s *second
	if len(h.ring) < historySlots {
		h.ring = append(h.ring, second{})
		s = &h.ring[len(h.ring)-1]
	} else {
		s = &h.ring[h.head]
		h.head = (h.head + 1) % historySlots
	}
	s.at, s.requests, s.errors, s.buckets = now, 0, 0, s.buckets[:0]
	// Counts that went back (a pool's counters begun again) start the
	// differences again, rather than wrapping around.
	if h.valid && !notBelow(c, &h.last) {
		h.valid = false
	}
	if h.valid {
		s.requests = c.Requests - h.last.Requests
		s.errors = c.Errors - h.last.Errors
		for i := range c.Latency {
			if d := c.Latency[i] - h.last.Latency[i]; d != 0 {
				s.buckets = append(s.buckets, bucketDelta{i: uint16(i), n: uint32(min(d, 1<<32-1))})
			}
		}
	}
	h.last, h.valid = *c, true
}

// notBelow: every count of c is at least old's.
func notBelow(c, old *evidence.Counts) bool {
	if c.Requests < old.Requests || c.Errors < old.Errors {
		return false
	}
	for i := range c.Latency {
		if c.Latency[i] < old.Latency[i] {
			return false
		}
	}
	return true
}

// at is the i-th sample from the newest (0) back.
func (h *poolHistory) at(i int) *second {
	n := len(h.ring)
	return &h.ring[(h.head+n-1-i+n)%n]
}

// series is the traffic over the last `last` in spans of step (at least a
// second), oldest first; it stops where the history starts.
func (h *poolHistory) series(last, step time.Duration) []evidence.Point {
	n := len(h.ring)
	if n == 0 {
		return nil
	}
	step = max(step, historyEvery)
	oldest, end := h.at(n-1).at, h.at(0).at
	var out []evidence.Point
	i := 0 // the next sample to take, from the newest back
	var span evidence.Counts
	for k := 0; k < int(last/step); k++ {
		to := end.Add(-time.Duration(k) * step)
		from := to.Add(-step)
		if from.Before(oldest) {
			break
		}
		// The span is the samples after from, up to to: each one is what
		// changed since the sample before it.
		span = evidence.Counts{}
		for ; i < n && h.at(i).at.After(from); i++ {
			s := h.at(i)
			if s.at.After(to) {
				continue
			}
			span.Requests += s.requests
			span.Errors += s.errors
			for _, b := range s.buckets {
				span.Latency[b.i] += uint64(b.n)
			}
		}
		out = append(out, evidence.Point{At: to, Span: step, Requests: span.Requests, Errors: span.Errors, P99: span.Quantile(0.99)})
	}
	for a, b := 0, len(out)-1; a < b; a, b = a+1, b-1 {
		out[a], out[b] = out[b], out[a]
	}
	return out
}

func (c *Cluster) historyLoop() {
	tick := time.NewTicker(historyEvery)
	defer tick.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case now := <-tick.C:
			c.sampleHistory(now)
		}
	}
}

// sampleHistory takes, on the leader, a second's sample of the routes
// under way: its own live counts and every member's last flush. A
// follower keeps no history: it reads the leader's chart when asked
// (Series).
func (c *Cluster) sampleHistory(now time.Time) {
	c.mu.Lock()
	busy := map[string]bool{}
	var routes []stateEntry
	var names []string
	for r, s := range c.cache.states {
		if s.busy {
			busy[r] = true
			routes, names = append(routes, s), append(names, r)
		}
	}
	leading := c.leading
	c.mu.Unlock()
	var local []PoolStats
	if leading {
		for i, st := range routes {
			local = append(local, c.rolloutPools(st, names[i])...)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.history {
		if !busy[k.route] || !leading {
			delete(c.history, k)
		}
	}
	for _, p := range local {
		all := p.Traffic.All()
		s := c.cache.sum(c.o.Member, p.Route, p.Pool)
		others := s.Traffic.All()
		all.Add(&others)
		c.historyOf(poolKey{p.Route, p.Pool}).add(now, &all)
	}
}

// historyOf is a pool's history, new when it has none. c.mu held.
func (c *Cluster) historyOf(k poolKey) *poolHistory {
	h := c.history[k]
	if h == nil {
		h = &poolHistory{}
		c.history[k] = h
	}
	return h
}

// Series is a pool's cluster-wide traffic over the last `last` in spans of
// step, oldest first; false when the cluster keeps none for the route (no
// rollout under way, or a pool outside it: the member's own windows tell
// the same). On the leader it is its history; on a follower the leader's
// chart, read now: spans of chartStep at least (longer ones add up
// requests and errors and take the largest p99 of the spans they join),
// up to chartEvery behind.
func (c *Cluster) Series(route, pool string, last, step time.Duration) ([]evidence.Point, bool) {
	c.mu.Lock()
	leading, connected := c.leading, c.connected
	st, busy := c.cache.states[route]
	if leading {
		defer c.mu.Unlock()
		h, ok := c.history[poolKey{route, pool}]
		if !ok {
			return nil, false
		}
		return h.series(last, step), true
	}
	c.mu.Unlock()
	if !busy || !st.busy || !st.inRollout(pool) || !connected {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(c.ctx, viewRead)
	resp, err := c.cli.Get(ctx, c.key("charts", route))
	cancel()
	var d chartDoc
	if err != nil || len(resp.Kvs) != 1 || json.Unmarshal(resp.Kvs[0].Value, &d) != nil {
		return nil, false
	}
	pts, ok := d.Pools[pool]
	if !ok {
		return nil, false
	}
	return joinSpans(pts, time.Duration(d.Step)*time.Millisecond, last, step), true
}

// joinSpans is a chart's last `last` in spans of step (at least the
// chart's own span): requests and errors added up, the largest p99.
func joinSpans(pts []chartPoint, own, last, step time.Duration) []evidence.Point {
	if len(pts) == 0 || own <= 0 {
		return nil
	}
	k := max(1, int(step/own))
	end := time.UnixMilli(pts[len(pts)-1].At)
	var out []evidence.Point
	// From the newest back, k spans at a time.
	for i := len(pts); i-k >= 0; i -= k {
		p := evidence.Point{At: time.UnixMilli(pts[i-1].At), Span: time.Duration(k) * own}
		if end.Sub(p.At)+p.Span > last {
			break
		}
		for _, q := range pts[i-k : i] {
			p.Requests += q.R
			p.Errors += q.E
			p.P99 = max(p.P99, time.Duration(q.P99)*time.Microsecond)
		}
		out = append(out, p)
	}
	slices.Reverse(out)
	return out
}
