package cluster

import "sort"

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

// View returns the cluster as this member sees it.
func (c *Cluster) View() View {
	c.mu.Lock()
	defer c.mu.Unlock()
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
		for r, acks := range c.cache.acks {
			if n, ok := acks[id]; ok {
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
