package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// What a member reports to the leader: for each route under way, its
// acknowledgement of the state it serves (acks/<route>/<member>) and its
// counts of the route (counts/<route>/<member>), written together. The
// leader alone watches them (loops.go).
//
// A route's counts are a series: they start from zero when the member
// first reports the route in a rollout, and a member that stops
// reporting a route forgets its series (a later rollout starts another,
// and the leader retires the old one's counts, so its sums never go
// back). A member's first document of a route therefore never carries
// traffic from before it reported the route (hours of stable's requests,
// say, into a step's evidence); only the routes under way are reported,
// each only when it changed: at 10,000 routes with 3 under way a member
// writes 3 small documents a second, not 10,000.

const (
	// The leader writes the chart of each route under way every
	// chartEvery: its last chartSpan in spans of chartStep (a follower's
	// dashboard shows those spans, and is up to chartEvery behind).
	chartEvery = 5 * time.Second
	chartSpan  = 5 * time.Minute
	chartStep  = 5 * time.Second
	// A transaction holds at most txnOps operations (etcd's --max-txn-ops
	// default is 128) and about txnBytes of values (its request limit,
	// --max-request-bytes, is 1.5 MiB by default).
	txnOps   = 64
	txnBytes = 512 << 10
)

// reporter is the member's side of its reports; mu is held through a
// write, so two writes of one route's documents never cross (an older
// acknowledgement written after a newer one).
type reporter struct {
	mu     sync.Mutex
	series uint64 // the number of the last series started in this boot
	routes map[string]*reported
	lease  clientv3.LeaseID // of the last writes: a new lease writes all again
}

type reported struct {
	series string
	base   map[string]*PoolStats // each pool's counts when the series began
	sent   []byte                // the last counts written
	seq    int64                 // the last state acknowledged
}

// forget drops every series (this member leads: its own counts are
// live; should it follow again, it starts new ones).
func (r *reporter) forget() {
	r.mu.Lock()
	r.routes = nil
	r.mu.Unlock()
}

// report writes this member's reports: with no ack, those of the routes
// under way that changed since they were last written (the flush every
// flushBusy); else those of the routes in ack only (acknowledgements:
// written even when unchanged, or not under way).
func (c *Cluster) report(sess interface{ Lease() clientv3.LeaseID }, ack ...string) error {
	rep := &c.rep
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if rep.routes == nil {
		rep.routes = map[string]*reported{}
	}
	c.mu.Lock()
	busy := map[string]stateEntry{}
	for r, s := range c.cache.states {
		if s.busy {
			busy[r] = s
		}
	}
	applied := map[string]int64{}
	if len(ack) == 0 {
		for r := range busy {
			applied[r] = c.applied[r]
		}
	}
	acked := map[string]bool{}
	for _, r := range ack {
		applied[r], acked[r] = c.applied[r], true
	}
	c.mu.Unlock()
	for r := range rep.routes {
		if _, ok := busy[r]; !ok {
			delete(rep.routes, r)
		}
	}
	lease := sess.Lease()
	fresh := lease != rep.lease
	type write struct {
		route  string
		counts []byte
		seq    int64
	}
	var writes []write
	for r, seq := range applied {
		w := write{route: r, seq: seq}
		if st, ok := busy[r]; ok {
			e := rep.routes[r]
			pools := c.rolloutPools(st, r)
			if e == nil {
				rep.series++
				e = &reported{series: seriesName(c.boot, rep.series), base: map[string]*PoolStats{}}
				for i := range pools {
					e.base[pools[i].Pool] = &pools[i]
				}
				rep.routes[r] = e
			}
			for i := range pools {
				if e.base[pools[i].Pool] == nil {
					// A pool added during the rollout counts from now.
					e.base[pools[i].Pool] = &pools[i]
				}
			}
			w.counts, _ = json.Marshal(encodeStats(e.series, pools, e.base))
			if !fresh && !acked[r] && e.seq == seq && bytes.Equal(w.counts, e.sent) {
				continue
			}
		}
		writes = append(writes, w)
	}
	var ops []clientv3.Op
	for _, w := range writes {
		ops = append(ops, clientv3.OpPut(c.key("acks", w.route, c.o.Member), strconv.FormatInt(w.seq, 10), clientv3.WithLease(lease)))
		if w.counts != nil {
			ops = append(ops, clientv3.OpPut(c.key("counts", w.route, c.o.Member), string(w.counts), clientv3.WithLease(lease)))
		} else {
			// Not under way: no series; the leader retires the last one.
			ops = append(ops, clientv3.OpDelete(c.key("counts", w.route, c.o.Member)))
		}
	}
	if err := c.commit(ops, 2); err != nil {
		return err
	}
	if len(ack) == 0 {
		rep.lease = lease // every route under way is written under it now
	}
	for _, w := range writes {
		if e := rep.routes[w.route]; e != nil {
			e.sent, e.seq = w.counts, w.seq
		}
	}
	return nil
}

// commit writes ops in transactions of at most txnOps operations and
// about txnBytes, in groups of group operations never split (an
// acknowledgement and its counts).
func (c *Cluster) commit(ops []clientv3.Op, group int) error {
	for len(ops) > 0 {
		n, size := 0, 0
		for n < len(ops) && n+group <= txnOps {
			g := 0
			for _, op := range ops[n : n+group] {
				g += len(op.KeyBytes()) + len(op.ValueBytes())
			}
			if n > 0 && size+g > txnBytes {
				break
			}
			size += g
			n += group
		}
		ctx, cancel := context.WithTimeout(c.ctx, opTimeout)
		_, err := c.cli.Txn(ctx).Then(ops[:n]...).Commit()
		cancel()
		if err != nil {
			return err
		}
		ops = ops[n:]
	}
	return nil
}

// publishCharts writes, on the leader, the chart of each route under way
// (its history's last chartSpan in spans of chartStep) for the
// followers' dashboards. Bound to the leader's session: they go with it.
func (c *Cluster) publishCharts(now time.Time) {
	c.mu.Lock()
	sess := c.sess
	// The history holds the routes under way, their rollout pools.
	docs := map[string]*chartDoc{}
	for k, h := range c.history {
		d := docs[k.route]
		if d == nil {
			d = &chartDoc{At: now.UnixMilli(), Step: chartStep.Milliseconds(), Pools: map[string][]chartPoint{}}
			docs[k.route] = d
		}
		pts := []chartPoint{}
		for _, p := range h.series(chartSpan, chartStep) {
			pts = append(pts, chartPoint{At: p.At.UnixMilli(), R: p.Requests, E: p.Errors, P99: p.P99.Microseconds()})
		}
		d.Pools[k.pool] = pts
	}
	c.mu.Unlock()
	if sess == nil || len(docs) == 0 {
		return
	}
	var ops []clientv3.Op
	for r, d := range docs {
		b, _ := json.Marshal(d)
		ops = append(ops, clientv3.OpPut(c.key("charts", r), string(b), clientv3.WithLease(sess.Lease())))
	}
	if err := c.commit(ops, 1); err != nil {
		c.log.Debug("cannot write the cluster's charts for the followers", zap.Error(err))
	}
}

// rolloutPools are this member's counts of a route's pools in its
// rollout (the state's canary and stable; every pool of a state that
// names none).
func (c *Cluster) rolloutPools(st stateEntry, route string) []PoolStats {
	all := c.o.Handler.Stats(route)
	if st.pools == [2]string{} {
		return all
	}
	out := all[:0]
	for _, p := range all {
		if st.inRollout(p.Pool) {
			out = append(out, p)
		}
	}
	return out
}
