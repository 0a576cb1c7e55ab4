package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"
	"time"

	"canaryd/rollout"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The keys fall in two ranges. The reports (acks/, charts/, commands/,
// counts/) sort first, and only the leader watches them: every member
// writes them (the leader the charts), and a follower reads what it needs
// of them when asked (its View's acknowledgements, the leader's chart for
// its dashboard, its own command's outcome). Every member watches the rest
// (members, the election, states, instances, tickets). A follower that
// watched the reports too would receive every other member's counts every
// second: the cluster's etcd traffic would grow with the square of its
// members. Each range is one watch, so the events of one transaction (an
// acknowledgement and its counts) arrive together, in order.
func (c *Cluster) reportsRange() keyRange {
	return keyRange{c.prefix + "acks/", clientv3.GetPrefixRangeEnd(c.prefix + "counts/")}
}

func (c *Cluster) sharedRange() keyRange {
	return keyRange{clientv3.GetPrefixRangeEnd(c.prefix + "counts/"), clientv3.GetPrefixRangeEnd(c.prefix)}
}

// keyRange is etcd's keys from from (included) to to (excluded).
type keyRange struct{ from, to string }

// keep follows a range: one read, then a watch from that read's revision.
// A watch that ends (compacted, etcd without a leader, connection lost)
// starts over with a new read. It returns when ctx ends.
func (c *Cluster) keep(ctx context.Context, r keyRange, load func(kvs []*mvccpb.KeyValue), apply func(evs []*clientv3.Event)) {
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := c.cli.Get(gctx, r.from, clientv3.WithRange(r.to))
		cancel()
		if err != nil {
			pause(ctx, retryPause)
			continue
		}
		load(resp.Kvs)
		c.watch(ctx, r, resp.Header.Revision+1, apply)
	}
}

// watch applies a range's events from rev until the watch ends.
func (c *Cluster) watch(ctx context.Context, r keyRange, rev int64, apply func(evs []*clientv3.Event)) {
	// WithRequireLeader: an etcd member cut off from its quorum ends the
	// watch instead of going quiet.
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	for wr := range c.cli.Watch(wctx, r.from, clientv3.WithRange(r.to), clientv3.WithRev(rev)) {
		if err := wr.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				c.log.Info("cluster watch compacted; reading the keys again", zap.Int64("compact_revision", wr.CompactRevision))
			}
			return
		}
		apply(wr.Events)
	}
}

// watchLoop keeps the shared part of the cache.
func (c *Cluster) watchLoop() {
	c.keep(c.ctx, c.sharedRange(), func(kvs []*mvccpb.KeyValue) {
		c.mu.Lock()
		changed := c.cache.loadShared(c.prefix, kvs)
		c.mu.Unlock()
		c.publishInstances()
		c.applyStates(changed)
	}, func(evs []*clientv3.Event) {
		var changed []string
		instances := false
		c.mu.Lock()
		for _, ev := range evs {
			instances = instances || strings.HasPrefix(string(ev.Kv.Key), c.prefix+"instances/")
			if ev.Type == clientv3.EventTypeDelete {
				c.cache.del(c.prefix, string(ev.Kv.Key))
			} else if r := c.cache.put(c.prefix, ev.Kv); r != "" {
				changed = append(changed, r)
			}
		}
		c.mu.Unlock()
		// Instances first: a state of the leader's that releases them
		// finds them already in this member's pools.
		if instances {
			c.publishInstances()
		}
		c.applyStates(changed)
	})
}

// reportsLoop keeps the reports in the cache while this member leads,
// from the revision lead read them at.
func (c *Cluster) reportsLoop(ctx context.Context, rev int64) {
	apply := func(evs []*clientv3.Event) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, ev := range evs {
			if ev.Type == clientv3.EventTypeDelete {
				c.cache.del(c.prefix, string(ev.Kv.Key))
			} else {
				c.cache.put(c.prefix, ev.Kv)
			}
		}
	}
	c.watch(ctx, c.reportsRange(), rev, apply)
	c.keep(ctx, c.reportsRange(), func(kvs []*mvccpb.KeyValue) {
		c.mu.Lock()
		c.cache.loadReports(c.prefix, kvs)
		c.mu.Unlock()
	}, apply)
}

// applyStates serves the routes' new states, and has ackLoop acknowledge
// them: the watch goes on serving the next states meanwhile, never
// waiting on a write to etcd.
func (c *Cluster) applyStates(routes []string) {
	if len(routes) == 0 {
		return
	}
	sort.Strings(routes)
	var served []string
	for _, r := range routes {
		c.mu.Lock()
		st, ok := c.cache.states[r]
		c.mu.Unlock()
		if !ok {
			continue
		}
		c.o.Handler.State(r, st.data)
		c.mu.Lock()
		c.applied[r] = st.rev
		leading := c.leading
		c.mu.Unlock()
		if leading {
			continue // the leader serves its own decisions as it makes them
		}
		if !st.at.IsZero() {
			c.o.Metrics.Lag(r, max(0, c.o.Now().Sub(st.at).Seconds()))
		}
		served = append(served, r)
	}
	if len(served) == 0 {
		return
	}
	c.mu.Lock()
	for _, r := range served {
		c.toAck[r] = true
	}
	c.mu.Unlock()
	select {
	case c.ackNow <- struct{}{}:
	default:
	}
}

// ackLoop acknowledges the states served, all those pending in one write,
// with this member's counts of each route in the same transaction (so
// that the leader's sums hold every request served at the old weights
// once it sees the acknowledgement).
func (c *Cluster) ackLoop() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.ackNow:
		}
		c.mu.Lock()
		sess := c.sess
		var routes []string
		for r := range c.toAck {
			routes = append(routes, r)
		}
		clear(c.toAck)
		c.mu.Unlock()
		if sess == nil || len(routes) == 0 {
			continue
		}
		sort.Strings(routes)
		if err := c.report(sess, routes...); err != nil {
			c.log.Warn("cannot confirm the leader's weights; it starts the step's evidence without this member", zap.Strings("routes", routes), zap.Error(err))
		}
	}
}

// probeLoop reads this member's key every probeEvery: connected is
// whether that works (through etcd's quorum: a linearizable read). Cut
// off for partition_timeout, the member says so to its Handler. It also
// flushes the counters.
func (c *Cluster) probeLoop() {
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	start := c.o.Now()
	c.mu.Lock()
	c.lastOK = start
	c.mu.Unlock()
	var lastFlush time.Time
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, probeEvery*2)
		_, err := c.cli.Get(ctx, c.key("members", c.o.Member))
		cancel()
		now := c.o.Now()
		c.mu.Lock()
		was, wasPart := c.connected, c.partitioned
		c.connected = err == nil
		if err == nil {
			c.lastOK = now
			c.partitioned = false
		} else if now.Sub(c.lastOK) >= c.o.Config.PartitionTimeout.D() {
			c.partitioned = true
		}
		// The leader's own counts are live in its sums: it reports none.
		part, sess, busy := c.partitioned, c.sess, c.cache.busy() && !c.leading
		c.mu.Unlock()
		c.o.Metrics.Connected(err == nil)
		switch {
		case was && err != nil:
			c.log.Warn("cluster: etcd unreachable; serving the last weights", zap.Error(err),
				zap.Duration("partition_timeout", c.o.Config.PartitionTimeout.D()), zap.String("on_partition", c.o.Config.OnPartition))
		case !was && err == nil:
			c.log.Info("cluster: etcd reachable", zap.String("member", c.o.Member))
		}
		if part != wasPart {
			c.o.Handler.Partitioned(part)
		}
		if err == nil && sess != nil && busy && now.Sub(lastFlush) >= flushBusy {
			if c.report(sess) == nil {
				lastFlush = now
			}
		}
	}
}

// dutyLoop does the leader's part: it tells when members have confirmed
// a write, runs the commands sent to any member, and watches for config
// drift.
func (c *Cluster) dutyLoop() {
	tick := time.NewTicker(dutyEvery)
	defer tick.Stop()
	var lastDrift, lastCharts time.Time
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		}
		c.mu.Lock()
		c.o.Metrics.Members(len(c.cache.members))
		leading := c.leading
		c.mu.Unlock()
		if !leading {
			continue
		}
		c.settle()
		c.runCommands()
		now := c.o.Now()
		if now.Sub(lastDrift) >= time.Second {
			lastDrift = now
			c.checkDrift()
		}
		if now.Sub(lastCharts) >= chartEvery {
			lastCharts = now
			c.publishCharts(now)
		}
	}
}

// settle reports the writes every live member has confirmed, or that
// waited ackTimeout.
func (c *Cluster) settle() {
	type done struct {
		route string
		late  []string
	}
	var out []done
	now := c.o.Now()
	c.mu.Lock()
	for route, p := range c.pending {
		var late []string
		for id := range c.cache.members {
			if id != c.o.Member && c.cache.acks[route][id] < p.rev {
				late = append(late, id)
			}
		}
		timedOut := now.Sub(p.since) >= ackTimeout
		if len(late) == 0 || timedOut {
			sort.Strings(late)
			out = append(out, done{route, late})
			delete(c.pending, route)
			c.o.Metrics.Lag(route, now.Sub(p.since).Seconds())
		}
	}
	c.mu.Unlock()
	for _, d := range out {
		c.o.Handler.Settled(d.route, d.late)
	}
}

func (c *Cluster) runCommands() {
	type cmd struct {
		key string
		commandEntry
	}
	var todo []cmd
	c.mu.Lock()
	for k, e := range c.cache.commands {
		id := k + "@" + strconv.FormatInt(e.rev, 10)
		if e.doc.Done || c.executed[id] {
			continue
		}
		c.executed[id] = true
		todo = append(todo, cmd{k, e})
	}
	c.mu.Unlock()
	for _, t := range todo {
		// An action this version does not know (a member of another sent
		// it) is refused with the list of those it knows.
		var err error
		switch {
		case t.doc.Action == approveAction && t.doc.Approval != nil:
			err = c.o.Handler.Approve(t.route, *t.doc.Approval)
		default:
			var a rollout.Action
			if a, err = rollout.ParseAction(string(t.doc.Action)); err == nil {
				err = c.o.Handler.Command(t.route, a)
			}
		}
		t.doc.Done = true
		if err != nil {
			t.doc.Error = err.Error()
		}
		c.log.Info("cluster command run", zap.String("route", t.route), zap.String("action", string(t.doc.Action)),
			zap.String("from", t.doc.From), zap.Error(err))
		b, _ := json.Marshal(t.doc)
		ctx, cancel := context.WithTimeout(c.ctx, opTimeout)
		// The sender's lease stays on the key (IgnoreLease): it goes with
		// the sender.
		c.cli.Put(ctx, t.key, string(b), clientv3.WithIgnoreLease())
		cancel()
	}
}

// checkDrift compares every live member's route settings with the
// leader's, route by route, and reports the changes.
func (c *Cluster) checkDrift() {
	type report struct {
		route   string
		members []string
	}
	var out []report
	c.mu.Lock()
	for route, mine := range c.info.Routes {
		var differ []string
		for id, m := range c.cache.members {
			if id != c.o.Member && m.Routes[route] != mine {
				differ = append(differ, id)
			}
		}
		sort.Strings(differ)
		key := strings.Join(differ, ",")
		if c.drift[route] != key {
			c.drift[route] = key
			out = append(out, report{route, differ})
		}
	}
	c.mu.Unlock()
	for _, r := range out {
		c.o.Handler.Drift(r.route, r.members)
	}
}
