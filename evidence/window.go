// Package evidence is what canaryd knows of a pool's traffic, in process:
// lock-free counters and windows the request path writes (Pool), and the
// counts rollouts judge and the cluster sums (Counts, Traffic, Shadow).
// It imports only the standard library (and grpccode), so that rollout,
// cluster and balancer use it without Prometheus; package metrics exports
// the same requests to Prometheus through the Exporter a Pool is given.
package evidence

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

// Add adds o to c: counts of the same pool from elsewhere (another
// member of a cluster). The buckets are fixed, so sums are exact.
func (c *Counts) Add(o *Counts) {
	c.Requests += o.Requests
	c.Errors += o.Errors
	c.Cancelled += o.Cancelled
	for i := range c.Latency {
		c.Latency[i] += o.Latency[i]
	}
}

// Sub returns c minus an earlier reading of the same counts.
func (c Counts) Sub(earlier Counts) Counts {
	c.sub(&earlier)
	return c
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
	// WindowSlots is how many one-second snapshots a window holds at most.
	WindowSlots = int(WindowLength/WindowResolution) + 1
)

// Counter counts requests with atomic adds and no clock. Its latency
// buckets are allocated on the first request, so a pool that never sees
// one costs a few words. The zero value is ready.
type Counter struct {
	requests  atomic.Uint64
	errors    atomic.Uint64
	cancelled atomic.Uint64
	latency   atomic.Pointer[[LatencyBuckets]atomic.Uint64]
}

// Record counts one answer: status 499 is a request cancelled (the client
// went away), >= 500 an error.
func (w *Counter) Record(status int, d time.Duration) {
	if status == 499 {
		w.cancelled.Add(1)
		return
	}
	w.requests.Add(1)
	if status >= 500 {
		w.errors.Add(1)
	}
	lat := w.latency.Load()
	if lat == nil {
		w.latency.CompareAndSwap(nil, new([LatencyBuckets]atomic.Uint64))
		lat = w.latency.Load()
	}
	lat[bucketOf(d)].Add(1)
}

// Counts reads the counter, stamped with the span it covers.
func (w *Counter) Counts(from, to time.Time) Counts {
	c := Counts{From: from, To: to, Requests: w.requests.Load(), Errors: w.errors.Load(), Cancelled: w.cancelled.Load()}
	if lat := w.latency.Load(); lat != nil {
		for i := range c.Latency {
			c.Latency[i] = lat[i].Load()
		}
	}
	return c
}

// total is the number of events counted, of every kind: it changes
// whenever anything does (for the snapshots' "unchanged" test).
func (w *Counter) total() uint64 {
	return w.requests.Load() + w.cancelled.Load()
}

// window counts one pool's requests. Record is lock-free (atomic adds on
// cumulative counters, no clock). A ticker snapshots the counters once a
// second, and reads subtract a past moment's counts from the live ones.
// A snapshot is kept only when something changed since the one before,
// and holds only what changed since it (the latency buckets that moved,
// sparse), with the whole cumulative counts kept once, at the newest: an
// idle pool keeps nothing, one with a trickle of traffic a few bytes a
// second, a busy one what a second's traffic spreads over. (Each
// snapshot held the whole cumulative buckets, every bucket the pool ever
// used: 150 MB of heap for 200 routes with a request a second each after
// five minutes, TestWindowCostsWhatItHolds.)
type window struct {
	// Each class of request is counted apart (a rollout judges them
	// apart) and summed for every other reader.
	weighted, preview, targeted, propagated Counter

	created time.Time
	mu      sync.RWMutex // guards the fields below; taken by the ticker and readers only
	// snaps are in time order, each the change since the one before (the
	// first ever: since nothing). Those older than WindowLength go, but
	// the newest of them, which stands for the counts from then until the
	// next one (nothing changed in between).
	snaps []snapshot
	// buf is the array snaps lies in, from off: trimming moves off on,
	// and a full array has what it keeps moved to its front, so a busy
	// pool holds one array of at most WindowSlots+2 and makes no garbage.
	buf []snapshot
	off int
	// head is the cumulative counts at the newest snapshot: the counts at
	// snapshot k are head less the changes of the snapshots after k.
	head     Counts
	trimmed  bool      // an older snapshot was dropped: history before snaps[0] is gone
	lastTick time.Time // the last snapshot call, stored or not
}

// snapshot is what changed since the snapshot before, latency sparse.
type snapshot struct {
	at                          time.Time
	requests, errors, cancelled uint64
	lat                         []bucketCount
}

type bucketCount struct {
	i uint32
	n uint64
}

func newWindow(now time.Time) *window {
	return &window{created: now}
}

func (w *window) now(at time.Time) Counts {
	c := w.weighted.Counts(w.created, at)
	pv := w.preview.Counts(w.created, at)
	c.Add(&pv)
	tg := w.targeted.Counts(w.created, at)
	c.Add(&tg)
	pr := w.propagated.Counts(w.created, at)
	c.Add(&pr)
	return c
}

func (w *window) record(status int, d time.Duration, class Class) {
	switch class {
	case Preview:
		w.preview.Record(status, d)
	case Targeted:
		w.targeted.Record(status, d)
	case Propagated:
		w.propagated.Record(status, d)
	default:
		w.weighted.Record(status, d)
	}
}

// snapshot keeps the counters as of at, when they changed.
func (w *window) snapshot(at time.Time) {
	total := w.weighted.total() + w.preview.total() + w.targeted.total() + w.propagated.total()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastTick = at
	if w.head.Requests+w.head.Cancelled == total {
		w.trimLocked(at)
		return
	}
	c := w.now(at)
	sn := snapshot{at: at, requests: c.Requests - w.head.Requests, errors: c.Errors - w.head.Errors, cancelled: c.Cancelled - w.head.Cancelled}
	for i, n := range c.Latency {
		if d := n - w.head.Latency[i]; d != 0 {
			sn.lat = append(sn.lat, bucketCount{uint32(i), d})
		}
	}
	w.head = c
	w.pushLocked(sn)
	w.trimLocked(at)
}

// pushLocked appends a snapshot. w.mu held.
func (w *window) pushLocked(sn snapshot) {
	n := len(w.snaps)
	if w.off+n == len(w.buf) {
		if w.off > 0 {
			copy(w.buf, w.snaps)
			clear(w.buf[n:])
		} else {
			nb := make([]snapshot, min(max(8, 2*len(w.buf)), WindowSlots+2))
			if len(nb) <= n {
				nb = make([]snapshot, n+1) // trimming keeps at most WindowSlots+1
			}
			copy(nb, w.snaps)
			w.buf = nb
		}
		w.off = 0
	}
	w.buf[w.off+n] = sn
	w.snaps = w.buf[w.off : w.off+n+1]
}

// trim drops the snapshots older than WindowLength but the newest of
// them. w.mu held.
func (w *window) trimLocked(at time.Time) {
	cut := at.Add(-WindowLength)
	k := 0
	for k+1 < len(w.snaps) && !w.snaps[k+1].at.After(cut) {
		k++
	}
	if k > 0 {
		clear(w.snaps[:k]) // their buckets go now
		w.off += k
		w.snaps = w.snaps[k:]
		w.trimmed = true
	}
}

// back removes snapshot k's change from c (c: the counts at k, then at
// k-1).
func (sn *snapshot) back(c *Counts) {
	c.Requests -= sn.requests
	c.Errors -= sn.errors
	c.Cancelled -= sn.cancelled
	for _, b := range sn.lat {
		c.Latency[b.i] -= b.n
	}
}

// cumLocked is the cumulative counts at snapshot k. w.mu held.
func (w *window) cumLocked(k int) Counts {
	c := w.head
	for j := len(w.snaps) - 1; j > k; j-- {
		w.snaps[j].back(&c)
	}
	c.To = w.snaps[k].at
	return c
}

// at returns the index of the newest snapshot taken at or before t, -1
// when there is none. w.mu held.
func (w *window) atLocked(t time.Time) int {
	return sort.Search(len(w.snaps), func(k int) bool { return w.snaps[k].at.After(t) }) - 1
}

// since returns the counts from t to now, to the resolution of the
// snapshots: it starts at the newest snapshot taken at or before t.
func (w *window) since(t, now time.Time) Counts {
	c := w.now(now)
	if !t.After(w.created) {
		return c // everything this window ever saw
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	k := w.atLocked(t)
	if k < 0 {
		if w.trimmed && len(w.snaps) > 0 {
			c.Partial = true
			base := w.cumLocked(0)
			c.sub(&base)
		}
		// else: nothing was counted before the first snapshot kept (or t
		// is before it); everything counts.
		return c
	}
	base := w.cumLocked(k)
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
// last `last`, oldest first, ending at the last snapshot tick.
func (w *window) series(last, step time.Duration) []Point {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.lastTick.IsZero() || step < WindowResolution {
		if step < WindowResolution {
			step = WindowResolution
		}
		if w.lastTick.IsZero() {
			return nil
		}
	}
	// The spans' ends go back in time; so does a walk from the newest
	// snapshot, taking each one's change off the cumulative counts.
	cum, k := w.head, len(w.snaps)-1
	countsAt := func(t time.Time) Counts {
		for k >= 0 && w.snaps[k].at.After(t) {
			w.snaps[k].back(&cum)
			k--
		}
		if k < 0 {
			return Counts{}
		}
		return cum
	}
	n := int(last / step)
	var out []Point
	b := countsAt(w.lastTick)
	for i := 0; i < n; i++ {
		end := w.lastTick.Add(-time.Duration(i) * step)
		begin := end.Add(-step)
		if begin.Before(w.created) || (w.trimmed && len(w.snaps) > 0 && begin.Before(w.snaps[0].at)) {
			break
		}
		a := countsAt(begin)
		d := b
		d.sub(&a)
		b = a
		out = append(out, Point{At: end, Span: step, Requests: d.Requests, Errors: d.Errors, P99: d.Quantile(0.99)})
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
