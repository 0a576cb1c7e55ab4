package cluster

import (
	"time"

	"canaryd/evidence"
)

// The cluster's recent traffic, for the dashboard's charts: every member
// samples, once a second, the sums of every member's counts (its own live
// ones and the others' last flushes) of the routes whose rollout is under
// way, and keeps historyLength of them. A chart drawn from any member then
// shows the whole cluster's traffic, as the leader's analysis judges it.
const (
	historyEvery  = time.Second
	historyLength = 10 * time.Minute
)

type sample struct {
	at     time.Time
	counts evidence.Counts
}

// history is guarded by Cluster.mu.
type history map[poolKey][]sample

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

func (c *Cluster) sampleHistory(now time.Time) {
	c.mu.Lock()
	busy := map[string]bool{}
	for r, s := range c.cache.states {
		if s.busy {
			busy[r] = true
		}
	}
	c.mu.Unlock()
	if len(busy) == 0 {
		c.mu.Lock()
		clear(c.history)
		c.mu.Unlock()
		return
	}
	local := c.o.Handler.Stats()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range local {
		if !busy[p.Route] {
			continue
		}
		k := poolKey{p.Route, p.Pool}
		all := p.Traffic.All()
		s := c.cache.sum(c.o.Member, p.Route, p.Pool)
		others := s.Traffic.All()
		all.Add(&others)
		ring := append(c.history[k], sample{at: now, counts: all})
		for len(ring) > 0 && now.Sub(ring[0].at) > historyLength {
			ring = ring[1:]
		}
		c.history[k] = ring
	}
	for k := range c.history {
		if !busy[k.route] {
			delete(c.history, k)
		}
	}
}

// Series is a pool's cluster-wide traffic over the last `last` in spans of
// step, oldest first; false when the cluster keeps none for the route (no
// rollout under way: the member's own windows tell the same).
func (c *Cluster) Series(route, pool string, last, step time.Duration) ([]evidence.Point, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ring, ok := c.history[poolKey{route, pool}]
	if !ok || len(ring) == 0 {
		return nil, ok
	}
	step = max(step, historyEvery)
	// at is the newest sample at or before t.
	at := func(t time.Time) (evidence.Counts, bool) {
		for i := len(ring) - 1; i >= 0; i-- {
			if !ring[i].at.After(t) {
				return ring[i].counts, true
			}
		}
		return evidence.Counts{}, false
	}
	end := ring[len(ring)-1].at
	var out []evidence.Point
	for i := 0; i < int(last/step); i++ {
		to := end.Add(-time.Duration(i) * step)
		from := to.Add(-step)
		b, ok1 := at(to)
		a, ok2 := at(from)
		if !ok1 || !ok2 {
			break
		}
		d := b.Sub(a)
		out = append(out, evidence.Point{At: to, Span: step, Requests: d.Requests, Errors: d.Errors, P99: d.Quantile(0.99)})
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, true
}
