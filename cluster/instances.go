package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"sort"
	"time"

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

// Write saves registrations to etcd (registry.Store): puts with a lease
// of their TTL (a renewal takes a new lease; the old one, with no key
// left, expires by itself), deletes by key.
func (c *Cluster) Write(put []registry.Registration, del []registry.Key) error {
	ctx, cancel := context.WithTimeout(c.ctx, 2*opTimeout)
	defer cancel()
	leases := map[time.Duration]clientv3.LeaseID{}
	var ops []clientv3.Op
	for _, g := range put {
		data, err := json.Marshal(g)
		if err != nil {
			return err
		}
		var opts []clientv3.OpOption
		if g.TTL > 0 {
			id, ok := leases[g.TTL]
			if !ok {
				l, err := c.cli.Grant(ctx, int64(math.Ceil(g.TTL.Seconds())))
				if err != nil {
					return fmt.Errorf("etcd lease for the registrations: %w", err)
				}
				id = l.ID
				leases[g.TTL] = id
			}
			opts = append(opts, clientv3.WithLease(id))
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
