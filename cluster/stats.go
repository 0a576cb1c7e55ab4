package cluster

import (
	"strconv"

	"canaryd/evidence"
)

// PoolStats is one pool's cumulative counters on one member since it
// started: summable across members (fixed latency buckets, no quantiles).
type PoolStats struct {
	Route, Pool string
	Traffic     evidence.Traffic
	Shadow      evidence.Shadow
}

// wireCounts is evidence.Counts as flushed: the latency buckets sparse,
// since most of the 370 are empty, as one flat list of index, count
// pairs (a fifth smaller than a list of pairs).
type wireCounts struct {
	R uint64   `json:"r,omitempty"`
	E uint64   `json:"e,omitempty"`
	C uint64   `json:"c,omitempty"`
	L []uint64 `json:"l,omitempty"`
}

type wirePool struct {
	Pool       string     `json:"pool"`
	Weighted   wireCounts `json:"w,omitzero"`
	Preview    wireCounts `json:"p,omitzero"`
	Targeted   wireCounts `json:"t,omitzero"`
	Propagated wireCounts `json:"v,omitzero"`
	Copies     wireCounts `json:"sc,omitzero"`
	Primaries  wireCounts `json:"sp,omitzero"`
	Compared   uint64     `json:"cmp,omitempty"`
	Mismatches uint64     `json:"mis,omitempty"`
}

// statsDoc is the value of counts/<route>/<member>: one route's counters
// on one member, cumulative over a series. A series starts when the
// member first reports the route in a rollout (its counts from zero
// then); Series names it (the member's boot and a number), and a new
// series retires the old one's counts on the leader. One document a
// route keeps every document small whatever the number of concurrent
// rollouts: at most 6 classes × 370 buckets a pool (TestStatsDocBound).
type statsDoc struct {
	Series string     `json:"series"`
	Pools  []wirePool `json:"pools"`
}

// chartDoc is the value of charts/<route>: the leader's chart of a route
// under way (the cluster's traffic of its rollout pools, every class
// together), written every chartEvery. A follower does not watch the
// members' counts (only the leader needs those), so it charts the
// cluster's traffic from this document, read when its dashboard asks:
// followers receive nothing while nobody looks, and the cluster's etcd
// traffic grows with its members, not with their square. charts/ sorts
// among the reports, which only the leader watches.
type chartDoc struct {
	At    int64                   `json:"at"`   // Unix milliseconds
	Step  int64                   `json:"step"` // milliseconds
	Pools map[string][]chartPoint `json:"pools"`
}

// chartPoint is one span of a chart: its end, requests, errors and p99.
type chartPoint struct {
	At  int64  `json:"t"` // Unix milliseconds
	R   uint64 `json:"r,omitempty"`
	E   uint64 `json:"e,omitempty"`
	P99 int64  `json:"p,omitempty"` // microseconds
}

func toWire(c *evidence.Counts) wireCounts {
	w := wireCounts{R: c.Requests, E: c.Errors, C: c.Cancelled}
	for i, n := range c.Latency {
		if n != 0 {
			w.L = append(w.L, uint64(i), n)
		}
	}
	return w
}

// addWire adds flushed counts to c; bucket indices out of range (a
// member of another version) are dropped.
func addWire(c *evidence.Counts, w wireCounts) {
	c.Requests += w.R
	c.Errors += w.E
	c.Cancelled += w.C
	for i := 0; i+1 < len(w.L); i += 2 {
		if w.L[i] < evidence.LatencyBuckets {
			c.Latency[w.L[i]] += w.L[i+1]
		}
	}
}

// series names a member's series of a route: its boot and the route's
// start number in that boot.
func seriesName(boot string, n uint64) string { return boot + "." + strconv.FormatUint(n, 10) }

// encodeStats is one route's document: its pools' counts less base (the
// counts when the series started; absent pools count from zero).
func encodeStats(series string, ps []PoolStats, base map[string]*PoolStats) statsDoc {
	d := statsDoc{Series: series, Pools: make([]wirePool, 0, len(ps))}
	for i := range ps {
		p := ps[i]
		if b := base[p.Pool]; b != nil {
			p.Traffic = p.Traffic.Sub(b.Traffic)
			p.Shadow = p.Shadow.Sub(b.Shadow)
		}
		d.Pools = append(d.Pools, wirePool{
			Pool:     p.Pool,
			Weighted: toWire(&p.Traffic.Weighted), Preview: toWire(&p.Traffic.Preview), Targeted: toWire(&p.Traffic.Targeted), Propagated: toWire(&p.Traffic.Propagated),
			Copies: toWire(&p.Shadow.Copies), Primaries: toWire(&p.Shadow.Primaries),
			Compared: p.Shadow.Compared, Mismatches: p.Shadow.Mismatches,
		})
	}
	return d
}

type poolKey struct{ route, pool string }

// sums are cumulative counters of many series added up.
type sums map[poolKey]*PoolStats

func (s sums) add(route string, d statsDoc) {
	for _, p := range d.Pools {
		k := poolKey{route, p.Pool}
		e := s[k]
		if e == nil {
			e = &PoolStats{Route: route, Pool: p.Pool}
			s[k] = e
		}
		addPool(e, &p)
	}
}

func addPool(e *PoolStats, p *wirePool) {
	addWire(&e.Traffic.Weighted, p.Weighted)
	addWire(&e.Traffic.Preview, p.Preview)
	addWire(&e.Traffic.Targeted, p.Targeted)
	addWire(&e.Traffic.Propagated, p.Propagated)
	addWire(&e.Shadow.Copies, p.Copies)
	addWire(&e.Shadow.Primaries, p.Primaries)
	e.Shadow.Compared += p.Compared
	e.Shadow.Mismatches += p.Mismatches
}
