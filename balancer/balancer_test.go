package balancer

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustURL(t testing.TB, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// spec builds a route whose pools are p0, p1... with the given weights (bp)
// and n instances each.
func spec(t testing.TB, name string, n int, weights ...int) RouteSpec {
	s := RouteSpec{Name: name, PathPrefix: "/"}
	for i, w := range weights {
		ps := PoolSpec{Name: "p" + strconv.Itoa(i), Weight: w}
		for k := 0; k < n; k++ {
			ps.Instances = append(ps.Instances, mustURL(t, fmt.Sprintf("http://127.0.0.1:%d", 10000+100*i+k)))
		}
		s.Pools = append(s.Pools, ps)
	}
	return s
}

func newRouter(t testing.TB, specs ...RouteSpec) *Router {
	r := NewRouter()
	if _, err := r.Apply(specs); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSchedulePickSequence(t *testing.T) {
	// Smooth WRR at 75/25 interleaves a a b a, never a a a b.
	r := newRouter(t, spec(t, "r", 1, 7500, 2500)).Load().Route("r")
	var got string
	for i := 0; i < 12; i++ {
		p, _ := r.Pick(nil)
		got += p.Name[1:]
	}
	if want := "001000100010"; got != want {
		t.Errorf("sequence = %s, want %s", got, want)
	}
}

func TestScheduleSplitsExactly(t *testing.T) {
	for _, ws := range [][]int{
		{9000, 1000}, {9900, 100}, {50, 9950}, {1, 9999}, {10000, 0}, {0, 10000},
		{3333, 3333, 3334}, {2500, 0, 7500}, {5000, 2500, 1250, 1250}, {9950, 25, 25},
	} {
		t.Run(fmt.Sprint(ws), func(t *testing.T) {
			s := smoothSchedule(ws)
			counts := make([]int, len(ws))
			for _, p := range s {
				counts[p]++
			}
			for i, w := range ws {
				if counts[i] != w {
					t.Errorf("pool %d: %d slots of %d, want %d", i, counts[i], Slots, w)
				}
			}
			// Any 100 consecutive picks (wrapping, as the cursor does) are
			// within 2 of the target for every pool.
			const win = 100
			c := make([]int, len(ws))
			for k := 0; k < win; k++ {
				c[s[k]]++
			}
			for start := 0; start < Slots; start++ {
				for i, w := range ws {
					target := float64(w) * win / Slots
					if d := float64(c[i]) - target; d > 2 || d < -2 {
						t.Fatalf("window at %d: pool %d got %d, target %.2f", start, i, c[i], target)
					}
				}
				c[s[start]]--
				c[s[(start+win)%Slots]]++
			}
		})
	}
}

func TestWeightZeroNeverPicked(t *testing.T) {
	r := newRouter(t, spec(t, "r", 2, 0, 10000, 0)).Load().Route("r")
	for i := 0; i < 3*Slots; i++ {
		if p, _ := r.Pick(nil); p.Name != "p1" {
			t.Fatalf("pick %d went to %s", i, p.Name)
		}
	}
}

func TestStickySameKeySamePool(t *testing.T) {
	s := spec(t, "r", 1, 5000, 5000)
	s.StickyHeader = "x-user-id"
	r := newRouter(t, s).Load().Route("r")
	for u := 0; u < 500; u++ {
		h := http.Header{"X-User-Id": {"user-" + strconv.Itoa(u)}}
		first, _ := r.Pick(h)
		for k := 0; k < 5; k++ {
			if p, _ := r.Pick(h); p != first {
				t.Fatalf("user %d moved %s → %s", u, first.Name, p.Name)
			}
		}
	}
}

// As the canary (last pool) rises from 1% to 100%, a user only ever moves
// stable → canary, never back; and the share of users on the canary tracks
// its weight.
func TestStickyMonotoneAsWeightRises(t *testing.T) {
	const users = 20000
	onCanary := make([]bool, users)
	for w := 100; w <= Slots; w += 100 {
		s := spec(t, "r", 1, Slots-w, w)
		s.StickyCookie = "uid"
		r := newRouter(t, s).Load().Route("r")
		n := 0
		for u := 0; u < users; u++ {
			h := http.Header{"Cookie": {"a=b; uid=u" + strconv.Itoa(u*7919) + "; c=d"}}
			p, _ := r.Pick(h)
			now := p.Name == "p1"
			if onCanary[u] && !now {
				t.Fatalf("at canary weight %d bp user %d moved back to stable", w, u)
			}
			onCanary[u] = now
			if now {
				n++
			}
		}
		share := float64(n) / users
		if d := share - float64(w)/Slots; d > 0.02 || d < -0.02 {
			t.Errorf("canary weight %d bp: %.3f of users on canary", w, share)
		}
	}
	// Rollback to 0 moves everyone back.
	s := spec(t, "r", 1, Slots, 0)
	s.StickyCookie = "uid"
	r := newRouter(t, s).Load().Route("r")
	for u := 0; u < users; u++ {
		if p, _ := r.Pick(http.Header{"Cookie": {"uid=u" + strconv.Itoa(u*7919)}}); p.Name != "p0" {
			t.Fatalf("after rollback user %d is on %s", u, p.Name)
		}
	}
}

func TestStickyWithoutKeyUsesSchedule(t *testing.T) {
	s := spec(t, "r", 1, 9000, 1000)
	s.StickyHeader = "X-User-ID"
	r := newRouter(t, s).Load().Route("r")
	n := 0
	for i := 0; i < Slots; i++ {
		if p, _ := r.Pick(http.Header{}); p.Name == "p1" {
			n++
		}
	}
	if n != 1000 {
		t.Errorf("canary got %d of %d keyless requests, want 1000", n, Slots)
	}
}

func TestForceReachesWeightZeroPool(t *testing.T) {
	s := spec(t, "r", 1, Slots, 0)
	s.ForceHeader = "X-Canary-Pool"
	s.ForceCookie = "pool"
	r := newRouter(t, s).Load().Route("r")
	for _, h := range []http.Header{
		{"X-Canary-Pool": {"p1"}},
		{"Cookie": {"pool=p1"}},
		{"Cookie": {`pool="p1"`}},
	} {
		if p, in := r.Pick(h); p.Name != "p1" || in == nil {
			t.Errorf("%v: picked %v", h, p)
		}
	}
	// An unknown pool name is ignored: the weights decide.
	if p, _ := r.Pick(http.Header{"X-Canary-Pool": {"nope"}}); p.Name != "p0" {
		t.Errorf("unknown forced pool picked %s", p.Name)
	}
}

func TestForcedPoolWithoutInstanceIsNotRedirected(t *testing.T) {
	s := spec(t, "r", 1, 5000, 5000)
	s.ForceHeader = "X-Canary-Pool"
	rt := newRouter(t, s)
	if _, err := setAvailable(rt, "r", "p1", "http://127.0.0.1:10100", false); err != nil {
		t.Fatal(err)
	}
	p, in := rt.Load().Route("r").Pick(http.Header{"X-Canary-Pool": {"p1"}})
	if p == nil || p.Name != "p1" || in != nil {
		t.Errorf("forced to a pool with nothing available: got %v %v, want p1 and no instance", p, in)
	}
}

func TestUnavailableInstancesAndPools(t *testing.T) {
	rt := newRouter(t, spec(t, "r", 2, 5000, 3000, 2000))
	set := func(pool string, port int, up bool) {
		t.Helper()
		if _, err := setAvailable(rt, "r", pool, fmt.Sprintf("http://127.0.0.1:%d", port), up); err != nil {
			t.Fatal(err)
		}
	}
	count := func() map[string]int {
		r := rt.Load().Route("r")
		c := map[string]int{}
		for i := 0; i < Slots; i++ {
			p, in := r.Pick(nil)
			if in == nil {
				c["503"]++
				continue
			}
			c[p.Name+"@"+in.URL.Port()]++
		}
		return c
	}
	// One instance of p0 down: p0 keeps its share on the other instance.
	set("p0", 10000, false)
	if c := count(); c["p0@10001"] != 5000 || c["p0@10000"] != 0 {
		t.Errorf("p0 with one instance down: %v", c)
	}
	// All of p0 down: its 50% goes to p1 and p2 as 60/40.
	set("p0", 10001, false)
	if c := count(); c["p1@10100"]+c["p1@10101"] != 6000 || c["p2@10200"]+c["p2@10201"] != 4000 {
		t.Errorf("p0 down: %v", c)
	}
	// Everything down: no instance at all.
	for _, port := range []int{10100, 10101, 10200, 10201} {
		set("p"+strconv.Itoa((port-10000)/100), port, false)
	}
	if c := count(); c["503"] != Slots {
		t.Errorf("all down: %v", c)
	}
	// Recovery restores the configured split.
	set("p0", 10000, true)
	set("p1", 10100, true)
	set("p2", 10200, true)
	if c := count(); c["p0@10000"] != 5000 || c["p1@10100"] != 3000 || c["p2@10200"] != 2000 {
		t.Errorf("recovered: %v", c)
	}
}

func TestWeightZeroPoolIsNoFallback(t *testing.T) {
	rt := newRouter(t, spec(t, "r", 1, Slots, 0))
	setAvailable(rt, "r", "p0", "http://127.0.0.1:10000", false)
	if p, in := rt.Load().Route("r").Pick(nil); in != nil {
		t.Errorf("stable down, canary at 0: picked %s, want none (503)", p.Name)
	}
}

func TestSetAvailableReportsTransitionsOnly(t *testing.T) {
	rt := newRouter(t, spec(t, "r", 1, Slots))
	before := rt.Load()
	if ch, _ := setAvailable(rt, "r", "p0", "http://127.0.0.1:10000", true); ch || rt.Load() != before {
		t.Error("marking an available instance available published a table")
	}
	if ch, _ := setAvailable(rt, "r", "p0", "http://127.0.0.1:10000", false); !ch || rt.Load() == before {
		t.Error("a real transition did not publish")
	}
	if _, err := setAvailable(rt, "r", "p0", "http://127.0.0.1:1", false); err == nil {
		t.Error("unknown instance accepted")
	}
}

func TestApplyKeepsInstanceStateAndReportsRemoved(t *testing.T) {
	rt := newRouter(t, spec(t, "r", 2, Slots))
	setAvailable(rt, "r", "p0", "http://127.0.0.1:10001", false)
	old := rt.Load().Route("r").Pools[0].Instances[0]
	old.Acquire()

	next := spec(t, "r", 1, Slots) // drops :10001
	next.Pools[0].Instances = append(next.Pools[0].Instances, mustURL(t, "http://127.0.0.1:10009"))
	removed, err := rt.Apply([]RouteSpec{next})
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0].Addr != "http://127.0.0.1:10001" || removed[0].Available() {
		t.Errorf("removed = %v", removed)
	}
	kept := rt.Load().Route("r").Pools[0].Instances[0]
	if kept != old || kept.InFlight() != 1 {
		t.Error("an instance that stayed lost its state")
	}
	// A bad spec changes nothing.
	before := rt.Load()
	if _, err := rt.Apply([]RouteSpec{spec(t, "r", 1, 5000)}); err == nil || rt.Load() != before {
		t.Errorf("bad spec: err=%v, table replaced=%v", err, rt.Load() != before)
	}
}

func TestLeastRequestAvoidsLoadedInstance(t *testing.T) {
	s := spec(t, "r", 2, Slots)
	s.Policy = LeastRequest
	r := newRouter(t, s).Load().Route("r")
	busy := r.Pools[0].Instances[0]
	for i := 0; i < 10; i++ {
		busy.Acquire()
	}
	for i := 0; i < 1000; i++ {
		if _, in := r.Pick(nil); in == busy {
			t.Fatal("P2C picked the loaded instance over an idle one")
		}
	}
}

func TestRoundRobinCyclesInstances(t *testing.T) {
	r := newRouter(t, spec(t, "r", 3, Slots)).Load().Route("r")
	var got string
	for i := 0; i < 6; i++ {
		_, in := r.Pick(nil)
		got += in.URL.Port()[4:]
	}
	if got != "012012" {
		t.Errorf("round robin order %s", got)
	}
}

func TestPickExcept(t *testing.T) {
	r := newRouter(t, spec(t, "r", 2, 9000, 1000)).Load().Route("r")
	p0 := r.Pools[0]
	for i := 0; i < 10; i++ {
		if p, in := r.PickExcept(p0, p0.Instances[0], false); p != p0 || in != p0.Instances[1] {
			t.Fatalf("PickExcept: %v %v", p, in)
		}
	}
	single := newRouter(t, spec(t, "r", 1, 9000, 1000)).Load().Route("r")
	if p, in := single.PickExcept(single.Pools[0], single.Pools[0].Instances[0], false); p != single.Pools[1] || in == nil {
		t.Errorf("with no other instance in the pool, want the other pool; got %v", p)
	}
	// An explicit preview never falls back to another pool.
	if p, in := single.PickExcept(single.Pools[0], single.Pools[0].Instances[0], true); p != single.Pools[0] || in != nil {
		t.Errorf("samePool: got %v %v, want the same pool and no instance", p, in)
	}
}

func TestMatch(t *testing.T) {
	mk := func(name, host, prefix string) RouteSpec {
		s := spec(t, name, 1, Slots)
		s.Host, s.PathPrefix = host, prefix
		return s
	}
	tb := newRouter(t,
		mk("any-root", "", "/"),
		mk("any-api", "", "/api"),
		mk("ex-root", "example.com", "/"),
		mk("ex-api-v2", "example.com", "/api/v2"),
		mk("v6", "::1", "/"),
	).Load()
	for _, tc := range []struct{ host, path, want string }{
		{"other.org", "/", "any-root"},
		{"other.org", "/api/x", "any-api"},
		{"example.com", "/api/x", "ex-root"},
		{"EXAMPLE.com:8080", "/api/v2/users", "ex-api-v2"},
		{"example.com", "/", "ex-root"},
		{"[::1]:8080", "/x", "v6"},
		{"[::1]", "/x", "v6"},
	} {
		if r := tb.Match(tc.host, tc.path); r == nil || r.Name != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %s", tc.host, tc.path, r, tc.want)
		}
	}
	if r := newRouter(t, mk("api", "", "/api")).Load().Match("h", "/other"); r != nil {
		t.Errorf("no route should match /other, got %s", r.Name)
	}
}

func TestCookieValue(t *testing.T) {
	for _, tc := range []struct {
		lines []string
		want  string
	}{
		{[]string{"uid=42"}, "42"},
		{[]string{"a=1; uid=42; b=2"}, "42"},
		{[]string{"a=1", "uid=7"}, "7"},
		{[]string{"xuid=1; uidx=2"}, ""},
		{[]string{"uid="}, ""},
		{[]string{`uid="q"`}, "q"},
		{nil, ""},
	} {
		got, ok := cookieValue(http.Header{"Cookie": tc.lines}, "uid")
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%q: got %q %v", tc.lines, got, ok)
		}
	}
}

// Picks race with reloads and availability flips; run with -race.
func TestConcurrentPicksDuringSwaps(t *testing.T) {
	rt := newRouter(t, spec(t, "r", 2, 9000, 1000))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if r := rt.Load().Route("r"); r != nil {
					if _, in := r.Pick(nil); in != nil {
						in.Acquire()
						in.Release()
					}
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		w := (i % 10) * 1000
		if _, err := rt.Apply([]RouteSpec{spec(t, "r", 2, Slots-w, w)}); err != nil {
			t.Fatal(err)
		}
		setAvailable(rt, "r", "p0", "http://127.0.0.1:10000", i%2 == 0)
	}
	close(stop)
	wg.Wait()
}

func BenchmarkPick(b *testing.B) {
	r := newRouter(b, spec(b, "r", 4, 9000, 1000)).Load().Route("r")
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Pick(nil)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Pick(nil)
			}
		})
	})
	s := spec(b, "r", 4, 9000, 1000)
	s.StickyCookie = "uid"
	sr := newRouter(b, s).Load().Route("r")
	h := http.Header{"Cookie": {"session=abc; uid=user-12345"}}
	b.Run("sticky-cookie", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sr.Pick(h)
		}
	})
	lr := spec(b, "r", 4, 9000, 1000)
	lr.Policy = LeastRequest
	lrr := newRouter(b, lr).Load().Route("r")
	b.Run("least-request-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				lrr.Pick(nil)
			}
		})
	})
}

func BenchmarkMatch20Prefixes(b *testing.B) {
	var specs []RouteSpec
	for i := 0; i < 20; i++ {
		s := spec(b, "r"+strconv.Itoa(i), 1, Slots)
		s.PathPrefix = "/svc" + strconv.Itoa(i)
		specs = append(specs, s)
	}
	tb := newRouter(b, specs...).Load()
	b.ReportAllocs()
	for b.Loop() {
		tb.Match("example.com:8080", "/svc19/users")
	}
}

func TestPanicModeSpreadsOverAllInstances(t *testing.T) {
	for _, tc := range []struct {
		threshold, down int
		panic           bool
	}{
		{50, 1, false}, // 3 of 4 available: 75% ≥ 50%
		{50, 2, false}, // 50% is not below 50%
		{50, 3, true},  // 25% < 50%: panic
		{0, 3, false},  // off
		{50, 4, false}, // none available: the pool gives its share away instead
	} {
		t.Run(fmt.Sprintf("threshold %d, %d of 4 down", tc.threshold, tc.down), func(t *testing.T) {
			s := spec(t, "r", 4, 9000, 1000)
			s.Pools[0].PanicThreshold = tc.threshold
			rt := newRouter(t, s)
			for k := 0; k < tc.down; k++ {
				setAvailable(rt, "r", "p0", fmt.Sprintf("http://127.0.0.1:%d", 10000+k), false)
			}
			r := rt.Load().Route("r")
			if r.Pools[0].Panic != tc.panic {
				t.Fatalf("Panic = %v, want %v", r.Pools[0].Panic, tc.panic)
			}
			seen := map[string]int{}
			for i := 0; i < 4000; i++ {
				if p, in := r.Pick(nil); p.Name == "p0" {
					seen[in.Addr]++
				}
			}
			want := 4 - tc.down
			if tc.panic {
				want = 4
			}
			if len(seen) != want {
				t.Errorf("p0 traffic reached %d instances, want %d: %v", len(seen), want, seen)
			}
		})
	}
}

func TestSlowStartRampsUp(t *testing.T) {
	s := spec(t, "r", 2, Slots)
	s.Pools[0].SlowStart = 400 * time.Millisecond
	rt := newRouter(t, s)
	const addr = "http://127.0.0.1:10001"
	setAvailable(rt, "r", "p0", addr, false)
	share := func() float64 {
		r := rt.Load().Route("r")
		n := 0
		for i := 0; i < 4000; i++ {
			if _, in := r.Pick(nil); in.Addr == addr {
				n++
			}
		}
		return float64(n) / 4000
	}
	setAvailable(rt, "r", "p0", addr, true)
	early := share()
	time.Sleep(450 * time.Millisecond)
	late := share()
	if early > 0.2 {
		t.Errorf("just back: %.2f of traffic, want a small share", early)
	}
	if late < 0.45 || late > 0.55 {
		t.Errorf("after the window: %.2f of traffic, want half", late)
	}
}

func TestSlowStartForInstancesAddedByReload(t *testing.T) {
	s := spec(t, "r", 1, Slots)
	s.Pools[0].SlowStart = time.Hour
	rt := newRouter(t, s)
	first := rt.Load().Route("r").Pools[0].Instances[0]
	if first.RampStart() != 0 {
		t.Error("an instance of the first table is slow-starting")
	}
	s.Pools[0].Instances = append(s.Pools[0].Instances, mustURL(t, "http://127.0.0.1:19999"))
	if _, err := rt.Apply([]RouteSpec{s}); err != nil {
		t.Fatal(err)
	}
	r := rt.Load().Route("r")
	if r.Pools[0].Instances[1].RampStart() == 0 {
		t.Error("an instance added by a reload is not slow-starting")
	}
	n := 0
	for i := 0; i < 1000; i++ {
		if _, in := r.Pick(nil); in == r.Pools[0].Instances[1] {
			n++
		}
	}
	if n > 20 {
		t.Errorf("a new instance at the start of a 1h ramp got %d of 1000", n)
	}
}

// A rollout's canary listed first still owns the lowest buckets.
func TestStickyLowPool(t *testing.T) {
	const users = 5000
	onCanary := make([]bool, users)
	for _, w := range []int{100, 1000, 5000, 9000} {
		s := spec(t, "r", 1, w, Slots-w) // p0 is the canary here
		s.StickyHeader, s.StickyLow = "X-User", "p0"
		r := newRouter(t, s).Load().Route("r")
		for u := 0; u < users; u++ {
			p, _ := r.Pick(http.Header{"X-User": {strconv.Itoa(u)}})
			if onCanary[u] && p.Name != "p0" {
				t.Fatalf("at %d bp user %d left the canary", w, u)
			}
			onCanary[u] = p.Name == "p0"
		}
	}
}

// FuzzMatch: any host and path is matched without panicking, and a match
// honours the route's host and prefix.
func FuzzMatch(f *testing.F) {
	for _, seed := range [][2]string{{"example.com", "/api/v2/x"}, {"[::1]:80", "/"}, {"EXAMPLE.com:", ""}, {"[", "//"}, {":", "/api"}, {"a:b:c", "\x00"}} {
		f.Add(seed[0], seed[1])
	}
	mk := func(name, host, prefix string) RouteSpec {
		s := spec(f, name, 1, Slots)
		s.Host, s.PathPrefix = host, prefix
		return s
	}
	tb := newRouter(f, mk("any", "", "/"), mk("api", "", "/api"), mk("ex", "example.com", "/"), mk("v6", "::1", "/")).Load()
	f.Fuzz(func(t *testing.T, host, path string) {
		r := tb.Match(host, path)
		if r == nil {
			if strings.HasPrefix(path, "/") {
				t.Fatalf("no route for %q %q though a catch-all exists", host, path)
			}
			return
		}
		if !strings.HasPrefix(path, r.PathPrefix) || (r.Host != "" && !strings.EqualFold(r.Host, stripPort(host))) {
			t.Fatalf("%q %q matched %s (host %q, prefix %q)", host, path, r.Name, r.Host, r.PathPrefix)
		}
	})
}

// FuzzStickyKey: any cookie header and key hashes to a bucket in range,
// the same one every time, and picks a pool without panicking.
func FuzzStickyKey(f *testing.F) {
	for _, seed := range []string{"uid=42", "a=1; uid=\"x\"; b", ";;;uid=", "uid", "=;=", "uid=\xff\xfe"} {
		f.Add(seed)
	}
	s := spec(f, "r", 1, 5000, 5000)
	s.StickyCookie = "uid"
	r := newRouter(f, s).Load().Route("r")
	f.Fuzz(func(t *testing.T, cookie string) {
		if b := Bucket(cookie); b >= Slots || b != Bucket(cookie) {
			t.Fatalf("Bucket(%q) = %d", cookie, b)
		}
		h := http.Header{"Cookie": {cookie}}
		p1, in := r.Pick(h)
		if p1 == nil || in == nil {
			t.Fatal("no pick")
		}
		if key, ok := cookieValue(h, "uid"); ok {
			if p2, _ := r.Pick(h); p2 != p1 {
				t.Fatalf("key %q moved between picks", key)
			}
		}
	})
}

// Turns are laid over the available instances only: with one of three
// down, the other two share its traffic evenly, not the next one in line
// taking all of it.
func TestRoundRobinSharesAnUnavailableInstancesTurns(t *testing.T) {
	rt := newRouter(t, spec(t, "r", 3, 9000, 1000))
	if _, err := setAvailable(rt, "r", "p0", "http://127.0.0.1:10000", false); err != nil {
		t.Fatal(err)
	}
	r := rt.Load().Route("r")
	counts := map[string]int{}
	for i := 0; i < Slots; i++ {
		p, in := r.Pick(nil)
		counts[p.Name+" "+in.Addr]++
	}
	want := map[string]int{
		"p0 http://127.0.0.1:10001": 4500, "p0 http://127.0.0.1:10002": 4500,
		"p1 http://127.0.0.1:10100": 334, "p1 http://127.0.0.1:10101": 333, "p1 http://127.0.0.1:10102": 333,
	}
	if !reflect.DeepEqual(counts, want) {
		t.Errorf("picks over one cycle: %v\nwant %v", counts, want)
	}
}

// Forcing can be restricted to listed peers and to requests that carry a
// secret; a refused force is an ordinary weighted pick.
func TestForceRestrictions(t *testing.T) {
	s := spec(t, "r", 1, 10000, 0)
	s.ForceHeader = "X-Canary-Pool"
	s.ForceFrom = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	s.ForceSecret, s.ForceSecretHeader = "s3cret", "x-canary-secret"
	r := newRouter(t, s).Load().Route("r")
	for _, tc := range []struct {
		peer, secret string
		forced       bool
	}{
		{"10.1.2.3:5555", "s3cret", true},
		{"[::1]:5555", "s3cret", true},
		{"[::ffff:10.1.2.3]:5555", "s3cret", true}, // a v4 peer on a v6 socket
		{"192.0.2.1:5555", "s3cret", false},        // not a listed peer
		{"10.1.2.3:5555", "wrong", false},
		{"10.1.2.3:5555", "", false},
		{"", "s3cret", false}, // unknown peer
		{"garbage", "s3cret", false},
	} {
		h := http.Header{"X-Canary-Pool": {"p1"}}
		if tc.secret != "" {
			h["X-Canary-Secret"] = []string{tc.secret}
		}
		p, in, forced := r.PickFrom(h, tc.peer)
		if forced != tc.forced || in == nil || (p.Name == "p1") != tc.forced {
			t.Errorf("peer %q secret %q: pool %v forced %v, want forced %v", tc.peer, tc.secret, p.Name, forced, tc.forced)
		}
	}
	if r.ForceSecretHeader != "X-Canary-Secret" {
		t.Errorf("secret header %q, want it canonical", r.ForceSecretHeader)
	}
	// Without restrictions anyone may force.
	open := spec(t, "r", 1, 10000, 0)
	open.ForceHeader = "X-Canary-Pool"
	if p, _, forced := newRouter(t, open).Load().Route("r").PickFrom(http.Header{"X-Canary-Pool": {"p1"}}, "192.0.2.1:1"); !forced || p.Name != "p1" {
		t.Errorf("an open force header was refused: %v %v", p.Name, forced)
	}
}

// smoothSchedule is smooth weighted round robin over the whole 10,000-slot
// cycle, as the schedule was before it was compacted: the reference the
// compact schedule is tested against.
func smoothSchedule(weights []int) []uint8 { return swrr(weights, Slots) }

// setAvailable marks the instance at addr of a route's pool in the live
// table; an error when the table has no such instance.
func setAvailable(rt *Router, route, pool, addr string, up bool) (bool, error) {
	if r := rt.Load().Route(route); r != nil {
		for _, p := range r.Pools {
			for _, in := range p.Instances {
				if p.Name == pool && in.Addr == addr {
					return rt.SetAvailable(in, up), nil
				}
			}
		}
	}
	return false, fmt.Errorf("no instance %s in route %q pool %q", addr, route, pool)
}

// A dynamic pool may be empty (its instances not come yet, or gone): the
// route compiles, the empty pool's share goes to the others, picks never
// choose it, and availability changes of the other pool's instances
// recompile the route without trouble (a division by the empty pool's
// instance count once panicked here).
func TestEmptyPoolTakesNoTraffic(t *testing.T) {
	u, _ := url.Parse("http://127.0.0.1:9001")
	rt := NewRouter()
	spec := RouteSpec{Name: "r", PathPrefix: "/", Pools: []PoolSpec{
		{Name: "blue", Weight: 9000, Instances: []*url.URL{u}},
		{Name: "green", Weight: 1000},
	}}
	if _, err := rt.Apply([]RouteSpec{spec}); err != nil {
		t.Fatal(err)
	}
	r := rt.Load().Route("r")
	for i := 0; i < 1000; i++ {
		p, in := r.Pick(http.Header{})
		if p == nil || p.Name != "blue" || in == nil {
			t.Fatalf("pick %d: pool %v instance %v; want blue's instance", i, p, in)
		}
	}
	in := r.Pools[0].Instances[0]
	rt.SetAvailable(in, false)
	rt.SetAvailable(in, true)
	if got := rt.Load().Route("r").Pools[0].Effective; got != Slots {
		t.Fatalf("blue's effective weight %d; want all of it", got)
	}
	spec.Policy = LeastRequest
	if _, err := rt.Apply([]RouteSpec{spec}); err != nil {
		t.Fatal(err)
	}
	if p, in := rt.Load().Route("r").Pick(http.Header{}); p == nil || p.Name != "blue" || in == nil {
		t.Fatalf("least_request pick: pool %v instance %v", p, in)
	}
}
