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
			if got, want := ix.match(host, path), linearMatch(routes, host, path); got != want {
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
