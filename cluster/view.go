package cluster

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// View is the cluster as this member sees it (GET /api/v1/cluster).
type View struct {
	Name      string
	Member    string
	Leader    string // "" while none
	Leading   bool
	Connected bool
	// Partitioned: cut off for partition_timeout or more.
	Partitioned bool
	// States is the sequence (etcd revision) of each route's latest state.
	States  map[string]int64
	Members []MemberView
}

// MemberView is one live member.
type MemberView struct {
	ID, Addr, Admin, Version, Boot, ConfigHash string
	// Acked is the state sequence it serves, by route.
	Acked map[string]int64
}

// viewRead bounds a follower's read of the acknowledgements for View.
const viewRead = 500 * time.Millisecond

// View returns the cluster as this member sees it. A follower does not
// watch the acknowledgements (only the leader needs them): it reads them
// here, a few bytes each, when asked.
func (c *Cluster) View() View {
	var acks map[string]map[string]int64
	c.mu.Lock()
	leading, connected := c.leading, c.connected
	c.mu.Unlock()
	if !leading {
		acks = map[string]map[string]int64{}
		// Cut off from etcd, the view goes without them, at once.
		var resp *clientv3.GetResponse
		err := errors.New("not connected")
		if connected {
			ctx, cancel := context.WithTimeout(c.ctx, viewRead)
			resp, err = c.cli.Get(ctx, c.key("acks")+"/", clientv3.WithPrefix())
			cancel()
		}
		if err == nil {
			for _, kv := range resp.Kvs {
				r, id, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), c.key("acks")+"/"), "/")
				if n, err := strconv.ParseInt(string(kv.Value), 10, 64); ok && err == nil {
					if acks[r] == nil {
						acks[r] = map[string]int64{}
					}
					acks[r][id] = n
				}
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if acks == nil {
		acks = c.cache.acks
	}
	v := View{Name: c.o.Config.Name, Member: c.o.Member, Leader: c.cache.leader(), Leading: c.leading,
		Connected: c.connected, Partitioned: c.partitioned, States: map[string]int64{}}
	if c.leading {
		v.Leader = c.o.Member
	}
	for r, s := range c.cache.states {
		v.States[r] = s.rev
	}
	for id, m := range c.cache.members {
		mv := MemberView{ID: id, Addr: m.Addr, Admin: m.Admin, Version: m.Version, Boot: m.Boot, ConfigHash: m.ConfigHash, Acked: map[string]int64{}}
		for r, byMember := range acks {
			if n, ok := byMember[id]; ok {
				mv.Acked[r] = n
			}
		}
		if id == v.Leader {
			// The leader serves what it writes.
			for r, s := range c.cache.states {
				mv.Acked[r] = s.rev
			}
		}
		v.Members = append(v.Members, mv)
	}
	sort.Slice(v.Members, func(i, j int) bool { return v.Members[i].ID < v.Members[j].ID })
	return v
}
