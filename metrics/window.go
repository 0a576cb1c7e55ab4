package metrics

import (
	"math/bits"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// The in-process latency histogram is log-linear, in the manner of HDR
// histograms: 16 linear sub-buckets per power of two of nanoseconds, from
// 2^minExp ns (~8 µs) to 2^maxExp ns (~69 s). A bucket is at most 1/16
// (6.25%) wide, so a quantile read at the bucket's midpoint is within about
// 3% of the truth.
const (
	subBits  = 4
	subCount = 1 << subBits
	minExp   = 13
	maxExp   = 36
	// LatencyBuckets is the number of in-process latency buckets.
	LatencyBuckets = 2 + (maxExp-minExp)*subCount
)

// bucketOf maps a duration to its latency bucket.
func bucketOf(d time.Duration) int {
	v := uint64(d)
	if d <= 0 || v < 1<<minExp {
		return 0
	}
	e := bits.Len64(v) - 1
	if e >= maxExp {
		return LatencyBuckets - 1
	}
	sub := int(v>>(e-subBits)) & (subCount - 1)
	return 1 + (e-minExp)*subCount + sub
}

// BucketBounds is the [lo, hi) range of latency bucket i.
func BucketBounds(i int) (lo, hi time.Duration) {
	switch {
	case i <= 0:
		return 0, 1 << minExp
	case i >= LatencyBuckets-1:
		return 1 << maxExp, 1 << maxExp
	}
	e := minExp + (i-1)/subCount
	sub := uint64((i - 1) % subCount)
	shift := e - subBits
	return time.Duration((subCount + sub) << shift), time.Duration((subCount + sub + 1) << shift)
}

// Counts are a pool's requests over a span of time. Cancelled requests
// (the client went away) are counted apart and in no other field.
type Counts struct {
	From, To  time.Time
	Requests  uint64 // answered, any status
	Errors    uint64 // answered >= 500: instance errors and gateway failures
	Cancelled uint64
	Latency   [LatencyBuckets]uint64
	// Partial is set when the span reaches back past the oldest snapshot
	// kept (WindowLength): the counts then start at that snapshot.
	Partial bool
}

// ErrorRate is Errors/Requests; 0 without requests.
func (c *Counts) ErrorRate() float64 {
	if c.Requests == 0 {
		return 0
	}
	return float64(c.Errors) / float64(c.Requests)
}

// Quantile estimates the q-quantile (0..1) of latency by linear
// interpolation inside its bucket; 0 without requests.
func (c *Counts) Quantile(q float64) time.Duration {
	var total uint64
	for _, n := range c.Latency {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen float64
	for i, n := range c.Latency {
		if n == 0 {
			continue
		}
		if seen+float64(n) >= rank {
			lo, hi := BucketBounds(i)
			frac := (rank - seen) / float64(n)
			return lo + time.Duration(frac*float64(hi-lo))
		}
		seen += float64(n)
	}
	lo, _ := BucketBounds(LatencyBuckets - 1)
	return lo
}

func (c *Counts) add(o *Counts) {
	c.Requests += o.Requests
	c.Errors += o.Errors
	c.Cancelled += o.Cancelled
	for i := range c.Latency {
		c.Latency[i] += o.Latency[i]
	}
}

func (c *Counts) sub(old *Counts) {
	c.Requests -= old.Requests
	c.Errors -= old.Errors
	c.Cancelled -= old.Cancelled
	for i := range c.Latency {
		c.Latency[i] -= old.Latency[i]
	}
	c.From = old.To
}

// Window settings: one snapshot a second, ten minutes kept (plus one, so a
// full ten-minute span has both ends).
const (
	WindowResolution = time.Second
	WindowLength     = 10 * time.Minute
	windowSlots      = int(WindowLength/WindowResolution) + 1
)

// cumulative counts requests with atomic adds and no clock.
type cumulative struct {
	requests  atomic.Uint64
	errors    atomic.Uint64
	cancelled atomic.Uint64
	latency   [LatencyBuckets]atomic.Uint64
}

func (w *cumulative) record(status int, d time.Duration) {
	if status == 499 {
		w.cancelled.Add(1)
		return
	}
	w.requests.Add(1)
	if status >= 500 {
		w.errors.Add(1)
	}
	w.latency[bucketOf(d)].Add(1)
}

func (w *cumulative) counts(from, to time.Time) Counts {
	c := Counts{From: from, To: to, Requests: w.requests.Load(), Errors: w.errors.Load(), Cancelled: w.cancelled.Load()}
	for i := range c.Latency {
		c.Latency[i] = w.latency[i].Load()
	}
	return c
}

// window counts one pool's requests. Record is lock-free (atomic adds on
// cumulative counters, no clock); a ticker snapshots the counters into a
// ring once a second, and reads subtract a snapshot from the live counters.
type window struct {
	// Weighted and preview requests are counted apart (a rollout judges
	// them apart) and summed for every other reader.
	weighted, preview cumulative

	created time.Time
	mu      sync.RWMutex // guards the ring; taken by the ticker and readers only
	ring    []Counts
	next    int
	filled  int
}

func newWindow(now time.Time) *window {
	return &window{created: now, ring: make([]Counts, windowSlots)}
}

// now reads the cumulative counters (since the window was created).
func (w *window) now(at time.Time) Counts {
	c := w.weighted.counts(w.created, at)
	pv := w.preview.counts(w.created, at)
	c.add(&pv)
	return c
}

func (w *window) record(status int, d time.Duration, preview bool) {
	if preview {
		w.preview.record(status, d)
		return
	}
	w.weighted.record(status, d)
}

// snapshot keeps the counters as of at in the ring.
func (w *window) snapshot(at time.Time) {
	c := w.now(at)
	w.mu.Lock()
	w.ring[w.next] = c
	w.next = (w.next + 1) % len(w.ring)
	if w.filled < len(w.ring) {
		w.filled++
	}
	w.mu.Unlock()
}

// since returns the counts from t to now, to the resolution of the ring:
// it starts at the newest snapshot taken at or before t.
func (w *window) since(t, now time.Time) Counts {
	c := w.now(now)
	if !t.After(w.created) {
		return c // everything this window ever saw
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.filled == 0 {
		return c
	}
	oldest := (w.next - w.filled + len(w.ring)) % len(w.ring)
	// Snapshots are in time order from oldest; find the last one <= t.
	k := sort.Search(w.filled, func(k int) bool {
		return w.ring[(oldest+k)%len(w.ring)].To.After(t)
	})
	if k == 0 {
		if w.filled == len(w.ring) {
			c.Partial = true
			base := w.ring[oldest]
			c.sub(&base)
		}
		// else: t is between creation and the first snapshot; the first
		// snapshot is after t, so everything counts.
		return c
	}
	base := w.ring[(oldest+k-1)%len(w.ring)]
	c.sub(&base)
	return c
}

// Point is a pool's traffic over one step of a series.
type Point struct {
	At       time.Time // end of the step
	Span     time.Duration
	Requests uint64
	Errors   uint64
	P99      time.Duration
}

// series returns the counts of consecutive spans of length step over the
// last `last`, oldest first, from the ring's snapshots.
func (w *window) series(last, step time.Duration) []Point {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.filled < 2 {
		return nil
	}
	k := int(step / WindowResolution)
	if k < 1 {
		k = 1
	}
	n := int(last / step)
	newest := (w.next - 1 + len(w.ring)) % len(w.ring)
	var out []Point
	for i := 0; i < n; i++ {
		bi := i * k
		ai := bi + k
		if ai >= w.filled {
			break
		}
		b := w.ring[(newest-bi+len(w.ring))%len(w.ring)]
		a := w.ring[(newest-ai+len(w.ring))%len(w.ring)]
		d := b
		d.sub(&a)
		out = append(out, Point{At: b.To, Span: b.To.Sub(a.To), Requests: d.Requests, Errors: d.Errors, P99: d.Quantile(0.99)})
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
