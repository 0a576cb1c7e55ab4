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
