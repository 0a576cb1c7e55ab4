package balancer

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// linearMatch is the table's rule written as a scan, the reference the
// index must agree with.
func linearMatch(routes []*Route, host, path string) *Route {
	var best *Route
	for _, r := range routes {
		if r.Host != "" && !strings.EqualFold(r.Host, host) {
			continue
		}
		if !strings.HasPrefix(path, r.PathPrefix) {
			continue
		}
		switch {
		case best == nil:
			best = r
		case (r.Host != "") != (best.Host != ""):
			if r.Host != "" {
				best = r
			}
		case len(r.PathPrefix) > len(best.PathPrefix):
			best = r
		}
	}
	return best
}

// The index agrees with the rule on random tables and requests: hosts
// with and without routes, nested and sibling prefixes, paths that match
// none.
func TestIndexAgreesWithTheRule(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	segs := []string{"a", "ab", "abc", "b", "api", "v1", "v2", "x"}
	randPrefix := func() string {
		p := "/"
		for k := r.IntN(4); k > 0; k-- {
			p += segs[r.IntN(len(segs))]
			if r.IntN(2) == 0 {
				p += "/"
			}
		}
		return p
	}
	for round := 0; round < 200; round++ {
		var routes []*Route
		seen := map[string]bool{}
		for i := r.IntN(30) + 1; i > 0; i-- {
			host := []string{"", "", "a.example", "B.example", "c.example"}[r.IntN(5)]
			p := randPrefix()
			if seen[strings.ToLower(host)+" "+p] {
				continue
			}
			seen[strings.ToLower(host)+" "+p] = true
			routes = append(routes, &Route{Name: fmt.Sprint(len(routes)), Host: host, PathPrefix: p})
		}
		ix := buildIndex(routes)
		for q := 0; q < 200; q++ {
			host := []string{"a.example", "A.EXAMPLE", "b.example", "c.example", "d.example", ""}[r.IntN(6)]
			path := randPrefix() + []string{"", "z", "abc/d", "/"}[r.IntN(4)]
			var got *Route
			if i := ix.match(host, path); i >= 0 {
				got = routes[i]
			}
			if want := linearMatch(routes, host, path); got != want {
				t.Fatalf("round %d: %q %q: index %v, rule %v", round, host, path, name(got), name(want))
			}
		}
	}
}

func name(r *Route) string {
	if r == nil {
		return "none"
	}
	return r.Name + "(" + r.Host + " " + r.PathPrefix + ")"
}

// Match at 10, 1,000 and 10,000 host routes, and the longest of 1,000
// prefixes of one host.
// go test ./balancer -run XXX -bench Match
func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("hosts-%d", n), func(b *testing.B) {
			var specs []RouteSpec
			for i := 0; i < n; i++ {
				s := spec(b, fmt.Sprintf("r%d", i), 1, 10000)
				s.Host = fmt.Sprintf("svc-%d.example.com", i)
				specs = append(specs, s)
			}
			t := newRouter(b, specs...).Load()
			host := fmt.Sprintf("svc-%d.example.com:8080", n-1)
			b.ReportAllocs()
			for b.Loop() {
				if t.Match(host, "/orders/123") == nil {
					b.Fatal("no match")
				}
			}
		})
	}
	b.Run("prefixes-1000", func(b *testing.B) {
		var specs []RouteSpec
		for i := 0; i < 1000; i++ {
			s := spec(b, fmt.Sprintf("r%d", i), 1, 10000)
			s.Host = "api.example.com"
			s.PathPrefix = fmt.Sprintf("/tenant-%d/v%d/", i/10, i%10)
			specs = append(specs, s)
		}
		t := newRouter(b, specs...).Load()
		b.ReportAllocs()
		for b.Loop() {
			if r := t.Match("api.example.com", "/tenant-99/v9/orders/123"); r == nil || r.Name != "r999" {
				b.Fatal("wrong match")
			}
		}
	})
}

// The compact schedule, repeated, is today's full schedule slot for slot,
// for random weights: the exact split and the interleaving are the same.
func TestCompactScheduleIsTheFullOne(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	cases := [][]int{{9000, 1000}, {5000, 5000}, {3333, 6667}, {10000}, {2500, 2500, 2500, 2500}, {0, 10000}, {100, 0, 9900}}
	for k := 0; k < 300; k++ {
		n := 1 + r.IntN(5)
		ws := make([]int, n)
		left := Slots
		for i := 0; i < n-1; i++ {
			// Round weights (multiples of 1%, 5%...) are the common case.
			unit := []int{1, 25, 100, 500, 1000}[r.IntN(5)]
			ws[i] = (r.IntN(left+1) / unit) * unit
			left -= ws[i]
		}
		ws[n-1] = left
		cases = append(cases, ws)
	}
	for _, ws := range cases {
		full, compact := smoothSchedule(ws), compactSchedule(ws)
		if Slots%len(compact) != 0 {
			t.Fatalf("%v: period %d does not divide %d", ws, len(compact), Slots)
		}
		for s := range full {
			if full[s] != compact[s%len(compact)] {
				t.Fatalf("%v: slot %d: full %d, compact %d (period %d)", ws, s, full[s], compact[s%len(compact)], len(compact))
			}
		}
	}
	if p := len(compactSchedule([]int{9000, 1000})); p != 10 {
		t.Errorf("90/10 repeats every %d slots, want 10", p)
	}
}

// Round robin inside a pool stays exact with a short period: with 90/10
// (one slot of ten for the canary) and three canary instances, each gets
// a third of the canary's picks, in turn.
func TestTurnsAcrossPeriods(t *testing.T) {
	s := spec(t, "r", 3, 9000, 1000)
	r := newRouter(t, s).Load().Route("r")
	got := map[string]int{}
	var seq []string
	for i := 0; i < 3000; i++ {
		p, in := r.Pick(nil)
		if p.Name == "p1" {
			got[in.Addr]++
			if len(seq) < 6 {
				seq = append(seq, in.URL.Port())
			}
		}
	}
	if len(got) != 3 {
		t.Fatalf("canary instances used: %v", got)
	}
	for addr, n := range got {
		if n != 100 {
			t.Errorf("%s: %d of 300 canary picks, want 100", addr, n)
		}
	}
	if seq[0] == seq[1] || seq[1] == seq[2] || seq[0] != seq[3] {
		t.Errorf("canary instances not in turn: %v", seq)
	}
}

// The divisor agrees with / and % for every divisor a schedule can have
// and every place in the cycle.
func TestDivisor(t *testing.T) {
	for d := 1; d <= Slots; d++ {
		if Slots%d != 0 && d > 300 {
			continue // periods divide Slots; small d cover the instance counts
		}
		v := newDivisor(d)
		for a := uint64(0); a < 2*Slots; a += 1 + uint64(d)/7 {
			if q, r := v.divmod(a); q != a/uint64(d) || r != a%uint64(d) {
				t.Fatalf("%d divmod %d = %d, %d; want %d, %d", a, d, q, r, a/uint64(d), a%uint64(d))
			}
		}
	}
}

// A route's picks follow today's full schedule exactly, whatever its
// cycle, and share each pool's picks among its instances within one.
func TestRoutePicksFollowTheFullSchedule(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for k := 0; k < 60; k++ {
		w := []int{0, 1, 100, 500, 1000, 2500, 3333, 5000, 9000, 9900}[r.IntN(10)]
		inst := 1 + r.IntN(7)
		s := spec(t, "r", inst, Slots-w, w)
		route := newRouter(t, s).Load().Route("r")
		full := smoothSchedule([]int{Slots - w, w})
		per := map[string]int{}
		for i := 0; i < 2*Slots; i++ {
			p, in := route.Pick(nil)
			if want := route.Pools[full[i%Slots]]; p != want {
				t.Fatalf("weights %d/%d, %d instances: pick %d went to %s, the full schedule says %s (cycle %d)", Slots-w, w, inst, i, p.Name, want.Name, len(route.schedule))
			}
			if i < Slots {
				per[p.Name+" "+in.Addr]++
			}
		}
		for _, p := range route.Pools {
			lo, hi := Slots, 0
			for _, in := range p.Instances {
				n := per[p.Name+" "+in.Addr]
				lo, hi = min(lo, n), max(hi, n)
			}
			if p.Effective > 0 && hi-lo > 1 {
				t.Errorf("weights %d/%d, %d instances: pool %s's instances got %d to %d picks", Slots-w, w, inst, p.Name, lo, hi)
			}
		}
	}
}
