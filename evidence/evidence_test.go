package evidence

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestBucketsCoverEveryDuration(t *testing.T) {
	prevHi := time.Duration(0)
	for i := 0; i < LatencyBuckets-1; i++ {
		lo, hi := BucketBounds(i)
		if lo != prevHi || hi <= lo {
			t.Fatalf("bucket %d is [%v, %v), previous ended at %v", i, lo, hi, prevHi)
		}
		if i > 0 && float64(hi-lo)/float64(lo) > 1.0/16+1e-9 {
			t.Fatalf("bucket %d is %.1f%% wide", i, 100*float64(hi-lo)/float64(lo))
		}
		prevHi = hi
	}
	r := rand.New(rand.NewPCG(1, 2))
	for k := 0; k < 100000; k++ {
		d := time.Duration(math.Exp(r.Float64() * math.Log(float64(100*time.Second))))
		i := bucketOf(d)
		lo, hi := BucketBounds(i)
		if d < lo || (d >= hi && i != LatencyBuckets-1) {
			t.Fatalf("%v went to bucket %d [%v, %v)", d, i, lo, hi)
		}
	}
}

// exactQuantile is the nearest-rank quantile of sorted values.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	return sorted[i]
}

func TestQuantileAccuracy(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, dist := range []struct {
		name string
		gen  func() time.Duration
	}{
		{"90% 5ms, 10% 50ms, with jitter", func() time.Duration {
			base := 5 * time.Millisecond
			if r.Float64() < 0.1 {
				base = 50 * time.Millisecond
			}
			return base + time.Duration(r.Int64N(int64(300*time.Microsecond)))
		}},
		{"log-uniform 100µs..2s", func() time.Duration {
			return time.Duration(math.Exp(math.Log(1e5) + r.Float64()*(math.Log(2e9)-math.Log(1e5))))
		}},
		{"exponential, mean 20ms", func() time.Duration { return time.Duration(r.ExpFloat64() * 20e6) }},
	} {
		t.Run(dist.name, func(t *testing.T) {
			w := newWindow(time.Now())
			var vals []time.Duration
			for i := 0; i < 20000; i++ {
				d := dist.gen()
				vals = append(vals, d)
				w.record(200, d, Weighted)
			}
			sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
			c := w.now(time.Now())
			for _, q := range []float64{0.5, 0.9, 0.99} {
				got, want := c.Quantile(q), exactQuantile(vals, q)
				if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.05 {
					t.Errorf("p%.0f = %v, exact %v (%.1f%% off)", q*100, got, want, rel*100)
				}
			}
		})
	}
}

// The window's reads match whole cumulative counts taken every second,
// while it keeps only each second's change.
func TestWindowMatchesWholeSnapshots(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	w := newWindow(t0)
	cum := map[int64]Counts{} // by second: the counts then
	for s := int64(1); s <= 900; s++ {
		for range rng.IntN(4) * rng.IntN(2) { // quiet seconds too
			status := 200
			if rng.IntN(10) == 0 {
				status = 503
			}
			w.record(status, time.Duration(rng.IntN(2000))*time.Millisecond, Class(rng.IntN(4)))
		}
		at := t0.Add(time.Duration(s) * time.Second)
		w.snapshot(at)
		cum[s] = w.now(at)
	}
	end := t0.Add(900 * time.Second)
	live := w.now(end)
	for _, back := range []int64{0, 1, 2, 7, 60, 299, 540} {
		got := w.since(end.Add(-time.Duration(back)*time.Second), end)
		want := live
		base := cum[900-back]
		want.sub(&base)
		if got.Requests != want.Requests || got.Errors != want.Errors || got.Latency != want.Latency {
			t.Fatalf("since %d s ago: %d requests, %d errors; want %d, %d", back, got.Requests, got.Errors, want.Requests, want.Errors)
		}
	}
	pts := w.series(5*time.Minute, 2*time.Second)
	if len(pts) != 150 {
		t.Fatalf("%d points; want 150", len(pts))
	}
	for i, p := range pts {
		endS := int64(900 - 2*(149-i))
		d := cum[endS]
		a := cum[endS-2]
		d.sub(&a)
		if p.Requests != d.Requests || p.Errors != d.Errors || p.P99 != d.Quantile(0.99) {
			t.Fatalf("point %d (to second %d): %d requests, %d errors, p99 %v; want %d, %d, %v", i, endS, p.Requests, p.Errors, p.P99, d.Requests, d.Errors, d.Quantile(0.99))
		}
	}
}

// A pool with a request a second over a wide spread of latencies keeps a
// few bytes a second, not every bucket it ever used in every snapshot.
func TestWindowCostsWhatItHolds(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	w := newWindow(t0)
	for s := 1; s <= 1200; s++ {
		w.record(200, time.Duration(1+s%300)*time.Millisecond, Weighted) // ~100 buckets used over time
		w.snapshot(t0.Add(time.Duration(s) * time.Second))
	}
	buckets := 0
	for _, sn := range w.snaps {
		buckets += len(sn.lat)
	}
	if len(w.buf) > WindowSlots+2 {
		t.Fatalf("the snapshots' array holds %d; want at most %d", len(w.buf), WindowSlots+2)
	}
	if len(w.snaps) > WindowSlots || buckets > len(w.snaps) {
		t.Fatalf("%d snapshots holding %d buckets; want at most %d snapshots of one bucket each", len(w.snaps), buckets, WindowSlots)
	}
	used := 0
	for _, n := range w.head.Latency {
		if n != 0 {
			used++
		}
	}
	t.Logf("%d snapshots, %d buckets held; a whole snapshot would hold %d each (%d in all)", len(w.snaps), buckets, used, used*len(w.snaps))
}
