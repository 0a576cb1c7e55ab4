// Package overload admits connections and requests within limits, in all
// and per client, so that one source cannot take the descriptors, memory
// and upstream connections every other client needs. Over a limit it
// refuses cheaply: a connection is closed as it is accepted (before TLS,
// before a goroutine is spent on it), a request is answered 503 with
// Retry-After before it is routed, so a flood never reaches an instance
// nor a rollout's numbers.
//
// Counting is lock-free for the totals (one atomic each) and takes one
// of 64 small shard locks for the per-client counts; no lock is held
// while anything else happens.
package overload

import (
	"net"
	"net/netip"
	"sync"
)

// Limit names a limit, as in server.limits and the metric's label.
type Limit string

// The limits, by their config keys.
const (
	MaxConnections               Limit = "max_connections"
	MaxConnectionsPerClient      Limit = "max_connections_per_client"
	MaxRequestsInFlight          Limit = "max_requests_in_flight"
	MaxRequestsInFlightPerClient Limit = "max_requests_in_flight_per_client"
)

// AllLimits lists them, for metrics to show every label from the start.
func AllLimits() []Limit {
	return []Limit{MaxConnections, MaxConnectionsPerClient, MaxRequestsInFlight, MaxRequestsInFlightPerClient}
}

// Limits are the four bounds. A zero field in Derive's input takes the
// derived default.
type Limits struct {
	MaxConnections               int
	MaxConnectionsPerClient      int
	MaxRequestsInFlight          int
	MaxRequestsInFlightPerClient int
}

// Headroom is the share of descriptors kept out of the limits for what is
// not a client's request: idle upstream connections, health probes, the
// admin listener, etcd, DNS, the state files. At least 64.
func Headroom(nofile int) int { return max(64, nofile/4) }

// Derive fills set's zero fields from the descriptor limit nofile: a
// proxied request holds its client's descriptor and one upstream
// descriptor, so max_connections = max_requests_in_flight = (nofile -
// Headroom) / 2 (at least 16), and the per-client limits are a quarter
// of those (at least 4). An explicit per-client limit above its total is
// lowered to it.
func Derive(set Limits, nofile int) Limits {
	nofile = min(nofile, 1<<24) // "unlimited" is not a count of descriptors
	base := max(16, (nofile-Headroom(nofile))/2)
	fill := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	fill(&set.MaxConnections, base)
	fill(&set.MaxRequestsInFlight, base)
	fill(&set.MaxConnectionsPerClient, max(4, set.MaxConnections/4))
	fill(&set.MaxRequestsInFlightPerClient, max(4, set.MaxRequestsInFlight/4))
	set.MaxConnectionsPerClient = min(set.MaxConnectionsPerClient, set.MaxConnections)
	set.MaxRequestsInFlightPerClient = min(set.MaxRequestsInFlightPerClient, set.MaxRequestsInFlight)
	return set
}

// Refused is told of every refusal, with the limit and the client's
// address (the zero Addr when none is known). It runs on the accepting
// or the request's goroutine: keep it cheap.
type Refused func(Limit, netip.Addr)

// counts are per-client counts in 64 shards. An entry lives while its
// count is above zero, so the maps hold only clients with something
// open; a deleted slot is reused by the next insert, without allocating.
type counts struct {
	shards [64]shard
}

type shard struct {
	mu sync.Mutex
	m  map[netip.Addr]int32
	_  [40]byte // one shard per cache line: clients on two cores do not share one
}

func newCounts() *counts {
	c := &counts{}
	for i := range c.shards {
		c.shards[i].m = map[netip.Addr]int32{}
	}
	return c
}

func (c *counts) shard(a netip.Addr) *shard {
	b := a.As16()
	x := uint64(b[8])<<56 | uint64(b[9])<<48 | uint64(b[10])<<40 | uint64(b[11])<<32 |
		uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
	x ^= uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
	x *= 0x9e3779b97f4a7c15
	return &c.shards[x>>58]
}

// clientKey is what a client is counted by: its address, or for IPv6
// its /64, the prefix one subscriber (one host, one home) is given, so
// that an attacker with a /64 of addresses is one client, not 2^64.
func clientKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// acquire counts one more for a unless that would pass limit.
func (c *counts) acquire(a netip.Addr, limit int32) bool {
	a = clientKey(a)
	s := c.shard(a)
	s.mu.Lock()
	n := s.m[a]
	ok := n < limit
	if ok {
		s.m[a] = n + 1
	}
	s.mu.Unlock()
	return ok
}

func (c *counts) release(a netip.Addr) {
	a = clientKey(a)
	s := c.shard(a)
	s.mu.Lock()
	if n := s.m[a]; n > 1 {
		s.m[a] = n - 1
	} else {
		delete(s.m, a)
	}
	s.mu.Unlock()
}

// of is a's count now (tests).
func (c *counts) of(a netip.Addr) int {
	a = clientKey(a)
	s := c.shard(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.m[a])
}

// addrOf is the IP of a net.Addr, IPv4-mapped addresses unmapped; the
// zero Addr when it has none (a Unix socket, a pipe in a test).
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
