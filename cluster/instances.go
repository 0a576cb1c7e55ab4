package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"sort"

	"canaryd/registry"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Registrations live under instances/<route>/<pool>/<host:port> (the
// address path-escaped), one key each, as the registry's JSON; one with
// a TTL is bound to an etcd lease of that TTL, so etcd expires it on
// every member at once. Every member's watch hands the whole set to the
// registry (OnInstances), whoever wrote it.

// maxTxnOps stays under etcd's --max-txn-ops (128 by default): a call
// with more changes is written in transactions of this many.
const maxTxnOps = 120

// OnInstances sets who gets the whole set of registrations after each
// change (the registry's Replace). Before Start.
func (c *Cluster) OnInstances(f func([]registry.Registration)) { c.onInstances = f }

func (c *Cluster) instanceKey(route, pool, host string) string {
	return c.key("instances", route, pool, url.PathEscape(host))
}

// Write saves registrations to etcd (registry.Store): puts bound to a
// lease of their TTL, deletes by key. A renewal (the registration comes
// with the lease it had) keeps its lease alive, one KeepAliveOnce; a new
// registration, or one whose lease is gone, gets a lease of its own (a
// shared one would let one instance's heartbeat keep another alive). A
// lease left without keys expires by itself.
func (c *Cluster) Write(put []registry.Registration, del []registry.Key) error {
	ctx, cancel := context.WithTimeout(c.ctx, 2*opTimeout)
	defer cancel()
	var ops []clientv3.Op
	for i := range put {
		g := &put[i]
		var opts []clientv3.OpOption
		if g.TTL > 0 {
			id, err := c.leaseFor(ctx, g)
			if err != nil {
				return err
			}
			g.Lease = int64(id)
			opts = append(opts, clientv3.WithLease(id))
		}
		data, err := json.Marshal(g)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(c.instanceKey(g.Route, g.Pool, g.Host()), string(data), opts...))
	}
	for _, k := range del {
		ops = append(ops, clientv3.OpDelete(c.instanceKey(k.Route, k.Pool, k.Host)))
	}
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		if _, err := c.cli.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
			return fmt.Errorf("etcd: %w", err)
		}
		ops = ops[n:]
	}
	return nil
}

// leaseFor is the lease a registration is written with: its own, kept
// alive, or a new one of its TTL.
func (c *Cluster) leaseFor(ctx context.Context, g *registry.Registration) (clientv3.LeaseID, error) {
	if g.Lease != 0 {
		if _, err := c.cli.KeepAliveOnce(ctx, clientv3.LeaseID(g.Lease)); err == nil {
			return clientv3.LeaseID(g.Lease), nil
		}
		// Expired or revoked: a new one below.
	}
	l, err := c.cli.Grant(ctx, int64(math.Ceil(g.TTL.Seconds())))
	if err != nil {
		return 0, fmt.Errorf("etcd lease for the registrations: %w", err)
	}
	return l.ID, nil
}

// publishInstances hands the registry every registration the cache
// holds. Called by the watch after a change of instances/ keys.
func (c *Cluster) publishInstances() {
	if c.onInstances == nil {
		return
	}
	c.mu.Lock()
	all := make([]registry.Registration, 0, len(c.cache.instances))
	for _, data := range c.cache.instances {
		var g registry.Registration
		if json.Unmarshal(data, &g) == nil {
			all = append(all, g)
		}
	}
	c.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].Addr < all[j].Addr })
	c.onInstances(all)
}
