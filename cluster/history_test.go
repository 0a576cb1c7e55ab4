package cluster

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"

	"canaryd/evidence"
	"canaryd/rollout"
)

// referenceSeries is the history as it was: the cumulative counts of each
// sample kept whole, a span the difference of the newest samples at or
// before its two ends.
func referenceSeries(samples []time.Time, cum []evidence.Counts, last, step time.Duration) []evidence.Point {
	step = max(step, historyEvery)
	at := func(t time.Time) (evidence.Counts, bool) {
		for i := len(samples) - 1; i >= 0; i-- {
			if !samples[i].After(t) {
				return cum[i], true
			}
		}
		return evidence.Counts{}, false
	}
	end := samples[len(samples)-1]
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
	slices.Reverse(out)
	return out
}

// The sparse ring draws the same charts as the whole samples did, for any
// traffic, span and step, before and after it wraps.
func TestHistoryMatchesWholeSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	h := &poolHistory{}
	var samples []time.Time
	var cum []evidence.Counts
	var c evidence.Counts
	start := time.Unix(1_700_000_000, 0)
	for s := 0; s < historySlots+250; s++ {
		n := rng.IntN(50)
		if s%7 == 0 {
			n = 0 // quiet seconds
		}
		for range n {
			c.Requests++
			if rng.IntN(20) == 0 {
				c.Errors++
			}
			c.Latency[rng.IntN(40)+rng.IntN(2)*200]++
		}
		now := start.Add(time.Duration(s) * time.Second)
		h.add(now, &c)
		samples, cum = append(samples, now), append(cum, c)
		if len(samples) > historySlots { // what the old ring kept
			samples, cum = samples[1:], cum[1:]
		}
		if s%97 != 0 && s != historySlots+249 {
			continue
		}
		for _, q := range []struct{ last, step time.Duration }{
			{5 * time.Minute, 5 * time.Second}, {10 * time.Minute, time.Second}, {10 * time.Minute, time.Minute},
			{time.Minute, 1500 * time.Millisecond}, {30 * time.Second, 0},
		} {
			got, want := h.series(q.last, q.step), referenceSeries(samples, cum, q.last, q.step)
			if !slices.Equal(got, want) {
				t.Fatalf("after %d samples, last %v step %v:\n got %d points %v\nwant %d points %v", s+1, q.last, q.step, len(got), head(got), len(want), head(want))
			}
		}
	}
}

func head(ps []evidence.Point) []evidence.Point { return ps[:min(3, len(ps))] }

// What a pool's history holds after ten minutes, with a trickle of
// traffic and with every second busy; and a sample in the steady state
// allocates nothing.
func TestHistoryCostsWhatItHolds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		perSec   int
		maxBytes uint64
	}{
		{"trickle (2 requests a second)", 2, 64 << 10},
		{"busy (500 a second over 40 buckets)", 500, 400 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			var c evidence.Counts
			step := func(h *poolHistory, s int) {
				for range tc.perSec {
					c.Requests++
					c.Latency[100+rng.IntN(40)]++
				}
				h.add(time.Unix(int64(s), 0), &c)
			}
			h := &poolHistory{}
			for s := range historySlots * 2 {
				step(h, s)
			}
			held := uint64(unsafe.Sizeof(*h)) + uint64(cap(h.ring))*uint64(unsafe.Sizeof(second{}))
			for _, s := range h.ring {
				held += uint64(cap(s.buckets)) * uint64(unsafe.Sizeof(bucketDelta{}))
			}
			whole := historySlots * int(unsafe.Sizeof(struct {
				at time.Time
				c  evidence.Counts
			}{}))
			t.Logf("%s: %d KiB held for %d samples (whole samples: %d KiB)", tc.name, held>>10, historySlots, whole>>10)
			if held > tc.maxBytes {
				t.Errorf("%d KiB held; want at most %d", held>>10, tc.maxBytes>>10)
			}
			s := historySlots * 2
			if a := testing.AllocsPerRun(100, func() { step(h, s); s++ }); a > 0.1 {
				t.Errorf("a sample in the steady state allocates %v times", a)
			}
		})
	}
}

// Every class of a pool's traffic crosses the wire and sums: weighted,
// preview, targeted and propagated counts are kept apart, so that a
// leader judges a segment on its own requests.
func TestStatsKeepTrafficClassesApart(t *testing.T) {
	var tr evidence.Traffic
	for i, c := range []*evidence.Counts{&tr.Weighted, &tr.Preview, &tr.Targeted, &tr.Propagated} {
		c.Requests, c.Errors = uint64(10*(i+1)), uint64(i)
		c.Latency[5+i] = c.Requests
	}
	data, err := json.Marshal(encodeStats("b1.1", []PoolStats{{Route: "web", Pool: "green", Traffic: tr}}, nil))
	if err != nil {
		t.Fatal(err)
	}
	var doc statsDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	s := sums{}
	s.add("web", doc)
	s.add("web", doc)
	got := s[poolKey{"web", "green"}].Traffic
	for i, pair := range [][2]*evidence.Counts{{&got.Weighted, &tr.Weighted}, {&got.Preview, &tr.Preview}, {&got.Targeted, &tr.Targeted}, {&got.Propagated, &tr.Propagated}} {
		g, w := pair[0], pair[1]
		if g.Requests != 2*w.Requests || g.Errors != 2*w.Errors || g.Latency[5+i] != 2*w.Latency[5+i] {
			t.Errorf("class %d: summed %d/%d, want twice %d/%d", i, g.Requests, g.Errors, w.Requests, w.Errors)
		}
	}
	// A document without the newer classes still reads.
	var old statsDoc
	if err := json.Unmarshal([]byte(`{"series":"b0.1","pools":[{"pool":"green","w":{"r":3},"p":{},"sc":{},"sp":{}}]}`), &old); err != nil || len(old.Pools) != 1 || old.Pools[0].Weighted.R != 3 {
		t.Fatalf("an older member's document: %+v (%v)", old, err)
	}
}

// A state under way by the rollout's own rule is busy for the cluster (a
// partitioned member sends those routes to stable): the phase names are
// read from the leader's JSON here, so a new phase must be added to both.
func TestBusyPhasesAreTheRolloutsUnderWay(t *testing.T) {
	for _, ph := range []rollout.Phase{rollout.Idle, rollout.Shadowing, rollout.SegmentPhase, rollout.Progressing, rollout.Paused, rollout.Promoted, rollout.RolledBack} {
		m := newCache("m1")
		m.setState("web", []byte(`{"phase":"`+string(ph)+`"}`), 1, time.Now())
		if got := m.busy(); got != ph.UnderWay() {
			t.Errorf("phase %s: busy %v, under way %v", ph, got, ph.UnderWay())
		}
	}
}

// A route's document stays far under etcd's request limit (1.5 MiB by
// default) whatever the traffic and however many rollouts run at once:
// one document a route, its two rollout pools, every bucket of every class
// at its largest value.
func TestStatsDocBound(t *testing.T) {
	var tr evidence.Traffic
	var sh evidence.Shadow
	for _, c := range []*evidence.Counts{&tr.Weighted, &tr.Preview, &tr.Targeted, &tr.Propagated, &sh.Copies, &sh.Primaries} {
		c.Requests, c.Errors, c.Cancelled = math.MaxUint64, math.MaxUint64, math.MaxUint64
		for i := range c.Latency {
			c.Latency[i] = math.MaxUint64
		}
	}
	sh.Compared, sh.Mismatches = math.MaxUint64, math.MaxUint64
	ps := []PoolStats{{Route: "web", Pool: "stable", Traffic: tr, Shadow: sh}, {Route: "web", Pool: "canary", Traffic: tr, Shadow: sh}}
	b, err := json.Marshal(encodeStats(seriesName("0123456789ab", math.MaxUint64), ps, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 128<<10 {
		t.Fatalf("a route's largest document is %d bytes; want at most 128 KiB", len(b))
	}
	t.Logf("a route's largest document: %d bytes (etcd's default limit: %d)", len(b), 3<<19)
}
