package balancer

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"testing"
	"time"
)

// manyRoutes is n host routes of two pools (4 + 1 instances), 90/10.
func manyRoutes(t testing.TB, n int) []RouteSpec {
	specs := make([]RouteSpec, 0, n)
	for i := 0; i < n; i++ {
		s := spec(t, fmt.Sprintf("r%d", i), 1, 9000, 1000)
		s.Host = fmt.Sprintf("svc-%d.example", i)
		for k := 1; k < 4; k++ {
			s.Pools[0].Instances = append(s.Pools[0].Instances, mustURL(t, fmt.Sprintf("http://127.0.%d.%d:%d", i/250, i%250, 9000+k)))
		}
		specs = append(specs, s)
	}
	return specs
}

// A health flip in one route recompiles that route only: every other
// route of the new table is the same compiled route (same pointer). An
// Apply that changes one route's weights does the same.
func TestOneRouteChangeLeavesTheOthersAlone(t *testing.T) {
	specs := manyRoutes(t, 50)
	rt := newRouter(t, specs...)
	before := rt.Load()
	in := before.Route("r7").Pools[0].Instances[2]
	if changed, err := setAvailable(rt, "r7", "p0", in.Addr, false); !changed || err != nil {
		t.Fatal(changed, err)
	}
	after := rt.Load()
	for _, r := range before.Routes() {
		same := after.Route(r.Name) == r
		if same == (r.Name == "r7") {
			t.Errorf("route %s: same compiled route %v after a flip in r7", r.Name, same)
		}
	}
	if p := after.Route("r7").Pools[0]; p.Available() != 3 {
		t.Errorf("r7's pool: %d available", p.Available())
	}
	specs[9].Pools[0].Weight, specs[9].Pools[1].Weight = 5000, 5000
	if _, err := rt.Apply(specs); err != nil {
		t.Fatal(err)
	}
	third := rt.Load()
	for _, r := range after.Routes() {
		if same := third.Route(r.Name) == r; same == (r.Name == "r9") {
			t.Errorf("route %s: same compiled route %v after a weight edit of r9", r.Name, same)
		}
	}
	if third.Route("r9").Pools[1].Weight != 5000 || third.Match("svc-9.example", "/") != third.Route("r9") {
		t.Error("r9's edit is not served")
	}
}

// With the publisher running, SetAvailable returns at once and the table
// follows shortly; a burst of flips is coalesced.
func TestPublisherPublishesOffTheCaller(t *testing.T) {
	rt := newRouter(t, manyRoutes(t, 20)...)
	ctx, cancel := context.WithCancel(context.Background())
	published := make(chan []*Route, 16)
	done := make(chan struct{})
	go func() { defer close(done); rt.Run(ctx, func(rs []*Route) { published <- rs }) }()
	defer func() { cancel(); <-done }()
	waitRunning(t, rt)
	in := rt.Load().Route("r3").Pools[0].Instances[0]
	if changed, _ := setAvailable(rt, "r3", "p0", in.Addr, false); !changed {
		t.Fatal("no change")
	}
	select {
	case rs := <-published:
		if len(rs) != 1 || rs[0].Name != "r3" || rs[0].Pools[0].Available() != 3 {
			t.Errorf("published %v", rs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing published")
	}
	if rt.Load().Route("r3").Pools[0].Available() != 3 {
		t.Error("the table does not show the change")
	}
}

func waitRunning(t testing.TB, rt *Router) {
	for i := 0; i < 1000; i++ {
		rt.mu.Lock()
		ok := rt.running
		rt.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("publisher not running")
}

// One instance's health transition at 10,000 routes: the time from
// SetAvailable to a table that has it, with the publisher running.
// go test ./balancer -run XXX -bench HealthPublish
func BenchmarkHealthPublish(b *testing.B) {
	rt := newRouter(b, manyRoutes(b, 10000)...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rt.Run(ctx, nil)
	waitRunning(b, rt)
	in := rt.Load().Route("r5000").Pools[0].Instances[1]
	var lat []time.Duration
	up := false
	b.ReportAllocs()
	for b.Loop() {
		prev := rt.Load().Route("r5000")
		start := time.Now()
		setAvailable(rt, "r5000", "p0", in.Addr, up)
		for rt.Load().Route("r5000") == prev { // until the route is republished
			runtime.Gosched()
		}
		lat = append(lat, time.Since(start))
		up = !up
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// Apply of a 10,000-route config where one route changed (a weight edit):
// only that route is compiled.
func BenchmarkApplyOneEdit(b *testing.B) {
	specs := manyRoutes(b, 10000)
	rt := newRouter(b, specs...)
	w := 1000
	b.ReportAllocs()
	for b.Loop() {
		w = 3000 - w
		specs[42].Pools[0].Weight, specs[42].Pools[1].Weight = Slots-w, w
		if _, err := rt.Apply(specs); err != nil {
			b.Fatal(err)
		}
	}
}
