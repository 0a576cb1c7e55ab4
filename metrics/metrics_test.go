package metrics

import (
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"canaryd/evidence"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestWindowSpans(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewRequests(reg)
	clock := time.Unix(1_000_000, 0)
	m.now = func() time.Time { return clock }
	p := m.Pool("web", "green")
	tick := func(n int, perTick int, status int) {
		for k := 0; k < n; k++ {
			for i := 0; i < perTick; i++ {
				p.Observe(status, time.Millisecond)
			}
			clock = clock.Add(time.Second)
			m.snapshot(clock)
		}
	}
	tick(60, 10, 200) // a minute of 10 ok/s
	stepStart := p.Now()
	stepAt := clock
	tick(30, 10, 500) // then 30 s of 10 errors/s
	tick(30, 10, 200)

	if c := p.Last(30 * time.Second); c.Requests != 300 || c.Errors != 0 {
		t.Errorf("last 30s: %d requests, %d errors; want 300, 0", c.Requests, c.Errors)
	}
	if c := p.Last(60 * time.Second); c.Requests != 600 || c.Errors != 300 {
		t.Errorf("last 60s: %d requests, %d errors; want 600, 300", c.Requests, c.Errors)
	}
	if c := p.Since(stepAt); c.Requests != 600 || c.Errors != 300 || c.ErrorRate() != 0.5 {
		t.Errorf("since step: %+v", c)
	}
	if c := p.Now().Sub(stepStart); c.Requests != 600 || c.Errors != 300 {
		t.Errorf("exact since step: %d/%d", c.Requests, c.Errors)
	}
	if c := p.Since(clock.Add(-time.Hour)); c.Requests != 1200 || c.Partial {
		t.Errorf("since before creation: %d requests, partial %v", c.Requests, c.Partial)
	}
	// Cancelled requests are kept apart.
	p.Observe(499, time.Second)
	if c := p.Now(); c.Cancelled != 1 || c.Requests != 1200 {
		t.Errorf("cancelled: %+v", c.Cancelled)
	}
	// Past the ring's reach the counts are marked partial.
	tick(evidence.WindowSlots+5, 1, 200)
	if c := p.Since(stepAt); !c.Partial || c.Requests != uint64(evidence.WindowSlots-1) {
		t.Errorf("beyond the window: %d requests, partial %v", c.Requests, c.Partial)
	}
	if got := testutil.ToFloat64(m.total.WithLabelValues("web", "green", "500")); got != 300 {
		t.Errorf("canaryd_requests_total{code=500} = %v", got)
	}
}

func TestRetainDropsSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewRequests(reg)
	m.Pool("web", "blue").Observe(200, time.Millisecond)
	green := m.Pool("web", "green")
	green.Observe(200, time.Millisecond)
	m.SetWeights("web", "green", 1000, 1000)
	m.Retain(map[string][]string{"web": {"blue"}})
	if n := testutil.CollectAndCount(m.total); n != 1 {
		t.Errorf("%d request series left, want blue's only", n)
	}
	if n := testutil.CollectAndCount(m.weight); n != 0 {
		t.Errorf("%d weight series left", n)
	}
	if m.Pool("web", "green") == green {
		t.Error("a dropped pool's stats came back")
	}
	if m.Pool("web", "blue").Now().Requests != 1 {
		t.Error("a kept pool lost its counts")
	}
}

// Writers on every core, readers and the snapshot ticker at once.
func TestConcurrentRecordAndRead(t *testing.T) {
	m := NewRequests(prometheus.NewRegistry())
	p := m.Pool("web", "blue")
	var wg sync.WaitGroup
	const writers, each = 8, 5000
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				status := 200
				if i%10 == 0 {
					status = 503
				}
				p.Observe(status, time.Duration(i)*time.Microsecond)
			}
		}(g)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			m.snapshot(time.Now())
			c := p.Last(time.Minute)
			_ = c.Quantile(0.99)
		}
	}()
	wg.Wait()
	<-done
	c := p.Now()
	if c.Requests != writers*each || c.Errors != writers*each/10 {
		t.Errorf("%d requests, %d errors; want %d, %d", c.Requests, c.Errors, writers*each, writers*each/10)
	}
}

func BenchmarkObserve(b *testing.B) {
	m := NewRequests(prometheus.NewRegistry())
	p := m.Pool("web", "blue")
	p.Observe(200, time.Millisecond) // the code's child is created once
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		d := 3 * time.Millisecond
		for pb.Next() {
			p.Observe(200, d)
		}
	})
}

func TestSeries(t *testing.T) {
	m := NewRequests(prometheus.NewRegistry())
	clock := time.Unix(2_000_000, 0)
	m.now = func() time.Time { return clock }
	p := m.Pool("web", "blue")
	m.snapshot(clock)
	for s := 1; s <= 20; s++ {
		for i := 0; i < s; i++ { // s requests in second s
			p.Observe(200, time.Millisecond)
		}
		if s%4 == 0 {
			p.Observe(500, time.Millisecond)
		}
		clock = clock.Add(time.Second)
		m.snapshot(clock)
	}
	pts := p.Series(10*time.Second, 5*time.Second)
	if len(pts) != 2 {
		t.Fatalf("%d points: %+v", len(pts), pts)
	}
	// Seconds 11-15: 11+...+15 = 65 requests plus one error (second 12);
	// seconds 16-20: 90 plus errors at 16 and 20.
	if pts[0].Requests != 66 || pts[0].Errors != 1 || pts[1].Requests != 92 || pts[1].Errors != 2 || pts[1].Span != 5*time.Second {
		t.Errorf("points: %+v", pts)
	}
	if !pts[0].At.Before(pts[1].At) {
		t.Error("not oldest first")
	}
}

// Preview requests count in the pool's totals and apart; Traffic splits
// them exactly, also while requests are being recorded (a reading never
// holds a preview request its total lacks).
func TestTrafficSplitsPreview(t *testing.T) {
	m := NewRequests(prometheus.NewRegistry())
	p := m.Pool("web", "green")
	for i := 0; i < 100; i++ {
		p.Observe(200, time.Millisecond)
	}
	for i := 0; i < 10; i++ {
		p.ObservePreview(500, time.Millisecond)
	}
	tr := p.Traffic()
	if tr.Weighted.Requests != 100 || tr.Weighted.Errors != 0 || tr.Preview.Requests != 10 || tr.Preview.Errors != 10 || tr.All().Requests != 110 {
		t.Errorf("split: weighted %d/%d, preview %d/%d", tr.Weighted.Errors, tr.Weighted.Requests, tr.Preview.Errors, tr.Preview.Requests)
	}
	if all := p.Now(); all.Requests != 110 || all.Errors != 10 {
		t.Errorf("the pool's totals: %d/%d", all.Errors, all.Requests)
	}
	if got := testutil.ToFloat64(m.preview.WithLabelValues("web", "green", "500")); got != 10 {
		t.Errorf("canaryd_preview_requests_total = %v", got)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 20000; i++ {
			p.ObservePreview(200, time.Duration(i)*time.Microsecond)
		}
	}()
	for i := 0; i < 2000; i++ {
		tr := p.Traffic()
		if tr.Weighted.Requests != 100 {
			t.Fatalf("while previews are recorded, weighted = %d", tr.Weighted.Requests)
		}
		for b, n := range tr.Weighted.Latency {
			if n > 100 {
				t.Fatalf("bucket %d of the weighted counts underflowed: %d", b, n)
			}
		}
	}
	<-done
}

// Shadow counts: the copies and the real answers to the same requests,
// mismatches among the compared; a reload that drops the pool drops them.
func TestShadowStats(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := NewShadows(reg)
	st := s.Pool("web", "green")
	st.Observe(200, time.Millisecond, 200, time.Millisecond, false, true, false)
	st.Observe(500, time.Millisecond, 200, time.Millisecond, false, true, true)
	st.Observe(502, time.Millisecond, 200, time.Millisecond, true, false, false)
	st.Dropped()
	sh := st.Shadow()
	if sh.Copies.Requests != 3 || sh.Copies.Errors != 2 || sh.Primaries.Requests != 3 || sh.Primaries.Errors != 0 || sh.Compared != 2 || sh.Mismatches != 1 {
		t.Errorf("shadow counts %+v", sh)
	}
	for result, want := range map[string]float64{ShadowSent: 3, ShadowMismatch: 1, ShadowError: 1, ShadowDropped: 1} {
		if got := testutil.ToFloat64(s.total.WithLabelValues("web", "green", result)); got != want {
			t.Errorf("%s = %v, want %v", result, got, want)
		}
	}
	s.Retain(map[string][]string{"web": {"blue"}})
	if n := testutil.CollectAndCount(s.total); n != 0 {
		t.Errorf("%d series left after the pool went", n)
	}
}

// A pool that never sees a request costs what its Prometheus children
// cost, a few KiB, not the 1.8 MB a dense ring of ten minutes took; one
// with steady traffic, what its snapshots hold.
func TestPoolMemory(t *testing.T) {
	measure := func(n int, use func(p *evidence.Pool)) float64 {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m := NewRequests(prometheus.NewRegistry())
		clock := time.Unix(3_000_000, 0)
		m.now = func() time.Time { return clock }
		pools := make([]*evidence.Pool, n)
		for i := range pools {
			pools[i] = m.Pool("web"+strconv.Itoa(i), "blue")
			use(pools[i])
		}
		for s := 0; s < 30; s++ {
			clock = clock.Add(time.Second)
			m.snapshot(clock)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(pools)
		return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	}
	idle := measure(1000, func(*evidence.Pool) {})
	t.Logf("an idle pool: %.1f KiB", idle/1024)
	if idle > 16<<10 {
		t.Errorf("an idle pool costs %.1f KiB, want at most 16", idle/1024)
	}
}
