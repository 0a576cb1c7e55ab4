package cluster

import "canaryd/evidence"

// PoolStats is one pool's cumulative counters on one member since it
// started: summable across members (fixed latency buckets, no quantiles).
type PoolStats struct {
	Route, Pool string
	Traffic     evidence.Traffic
	Shadow      evidence.Shadow
}

// wireCounts is evidence.Counts as flushed: the latency buckets sparse
// (index, count), since most of the 370 are empty.
type wireCounts struct {
	R uint64      `json:"r,omitempty"`
	E uint64      `json:"e,omitempty"`
	C uint64      `json:"c,omitempty"`
	L [][2]uint64 `json:"l,omitempty"`
}

type wirePool struct {
	Route      string     `json:"route"`
	Pool       string     `json:"pool"`
	Weighted   wireCounts `json:"w"`
	Preview    wireCounts `json:"p"`
	Targeted   wireCounts `json:"t,omitzero"`
	Propagated wireCounts `json:"v,omitzero"`
	Copies     wireCounts `json:"sc"`
	Primaries  wireCounts `json:"sp"`
	Compared   uint64     `json:"cmp,omitempty"`
	Mismatches uint64     `json:"mis,omitempty"`
}

// statsDoc is the value of stats/<member>: the member's counters since
// its boot. A new boot starts a new series.
type statsDoc struct {
	Boot  string     `json:"boot"`
	Pools []wirePool `json:"pools"`
}

func toWire(c *evidence.Counts) wireCounts {
	w := wireCounts{R: c.Requests, E: c.Errors, C: c.Cancelled}
	for i, n := range c.Latency {
		if n != 0 {
			w.L = append(w.L, [2]uint64{uint64(i), n})
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
	for _, b := range w.L {
		if b[0] < evidence.LatencyBuckets {
			c.Latency[b[0]] += b[1]
		}
	}
}

func encodeStats(boot string, ps []PoolStats) statsDoc {
	d := statsDoc{Boot: boot, Pools: make([]wirePool, 0, len(ps))}
	for i := range ps {
		p := &ps[i]
		d.Pools = append(d.Pools, wirePool{
			Route: p.Route, Pool: p.Pool,
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

func (s sums) add(d statsDoc) {
	for _, p := range d.Pools {
		k := poolKey{p.Route, p.Pool}
		e := s[k]
		if e == nil {
			e = &PoolStats{Route: p.Route, Pool: p.Pool}
			s[k] = e
		}
		addWire(&e.Traffic.Weighted, p.Weighted)
		addWire(&e.Traffic.Preview, p.Preview)
		addWire(&e.Traffic.Targeted, p.Targeted)
		addWire(&e.Traffic.Propagated, p.Propagated)
		addWire(&e.Shadow.Copies, p.Copies)
		addWire(&e.Shadow.Primaries, p.Primaries)
		e.Shadow.Compared += p.Compared
		e.Shadow.Mismatches += p.Mismatches
	}
}
