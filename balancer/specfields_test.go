package balancer

import (
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"testing"
	"time"

	"canaryd/evidence"
)

// sameSpec and copySpec are written out field by field, for speed and for
// comparing tags by identity. A field they leave out would make an edit of
// it never applied (the router would keep the old compiled route): this
// test edits every field of RouteSpec and PoolSpec, found by reflection,
// and fails when the router does not recompile the route, or when an edit
// made in place on the caller's spec after Apply leaks into the router's
// copy. A new field of a kind it cannot edit fails it too, until someone
// decides how it is compared.
func TestEveryFieldOfASpecIsApplied(t *testing.T) {
	base := func() RouteSpec {
		u1, _ := url.Parse("http://127.0.0.1:9001")
		u2, _ := url.Parse("http://127.0.0.1:9002")
		return RouteSpec{
			Name: "r", Host: "h.example", PathPrefix: "/", PreserveHost: true, Policy: RoundRobin,
			StickyHeader: "X-User", ForceHeader: "X-Pool", ForceCookie: "pool",
			ForceFrom:   []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			ForceSecret: "s", ForceSecretHeader: "X-Secret", StickyLow: "green",
			MirrorPool: "green", MirrorShare: 100, Mirror: &testMirror{}, Stats: &evidence.Pool{},
			Rules:    []RuleSpec{{Name: "beta", Headers: []StringMatch{{Name: "X-Beta", Value: "1"}}, Pool: "green"}},
			Affinity: &AffinitySpec{Cookie: "aff", Path: "/", TTL: time.Hour},
			Pools: []PoolSpec{
				{Name: "blue", Weight: 9000, Instances: []*url.URL{u1}, PanicThreshold: 50, SlowStart: time.Second, Stats: &evidence.Pool{}, Transport: &http.Transport{}},
				{Name: "green", Weight: 1000, Instances: []*url.URL{u2}, Stats: &evidence.Pool{}, Transport: &http.Transport{}},
			},
		}
	}
	// Edits that the kind's generic one would make invalid.
	special := map[string]func(s *RouteSpec){
		"Name":         nil, // another name is another route
		"Pools":        nil, // each pool's fields below
		"StickyCookie": func(s *RouteSpec) { s.StickyHeader, s.StickyCookie = "", "uid" },
		"StickyLow":    func(s *RouteSpec) { s.StickyLow = "blue" },
		"MirrorPool":   func(s *RouteSpec) { s.MirrorPool = "blue" },
		"Pools.Name": func(s *RouteSpec) {
			s.Pools[1].Name, s.StickyLow, s.MirrorPool, s.Rules[0].Pool = "teal", "teal", "teal", "teal"
		},
		"Pools.Weight":         func(s *RouteSpec) { s.Pools[0].Weight, s.Pools[1].Weight = 8000, 2000 },
		"Pools.Instances":      func(s *RouteSpec) { u, _ := url.Parse("http://127.0.0.1:9003"); s.Pools[0].Instances[0] = u },
		"ForceFrom":            func(s *RouteSpec) { s.ForceFrom[0] = netip.MustParsePrefix("11.0.0.0/8") },
		"Policy":               func(s *RouteSpec) { s.Policy = LeastRequest },
		"Pools.PanicThreshold": func(s *RouteSpec) { s.Pools[0].PanicThreshold = 60 },
		"Pools.SlowStart":      func(s *RouteSpec) { s.Pools[0].SlowStart = 2 * time.Second },
		"MirrorShare":          func(s *RouteSpec) { s.MirrorShare = 200 },
		"ForceSecretHeader":    func(s *RouteSpec) { s.ForceSecretHeader = "X-Other" },
		"Pools.Transport":      func(s *RouteSpec) { s.Pools[0].Transport = &http.Transport{} },
		"Pools.Stats":          func(s *RouteSpec) { s.Pools[0].Stats = &evidence.Pool{} },
		"Mirror":               func(s *RouteSpec) { s.Mirror = &testMirror{} },
		"Stats":                func(s *RouteSpec) { s.Stats = &evidence.Pool{} },
		"Rules":                func(s *RouteSpec) { s.Rules[0].Headers[0].Value = "2" },
		"Affinity":             func(s *RouteSpec) { s.Affinity.TTL = 2 * time.Hour },
	}
	var edits []string
	for _, f := range reflect.VisibleFields(reflect.TypeFor[RouteSpec]()) {
		edits = append(edits, f.Name)
	}
	for _, f := range reflect.VisibleFields(reflect.TypeFor[PoolSpec]()) {
		edits = append(edits, "Pools."+f.Name)
	}
	for _, name := range edits {
		t.Run(name, func(t *testing.T) {
			edit, ok := special[name]
			if !ok {
				edit = genericEdit(t, name)
			}
			if edit == nil {
				return
			}
			rt := NewRouter()
			spec := base()
			if _, err := rt.Apply([]RouteSpec{spec}); err != nil {
				t.Fatal(err)
			}
			before := rt.Load().Route("r")
			edit(&spec) // in place: the router must hold its own copy
			if _, err := rt.Apply([]RouteSpec{spec}); err != nil {
				t.Fatalf("the edit does not compile: %v", err)
			}
			if rt.Load().Route("r") == before {
				t.Fatalf("an edit of %s was not applied: sameSpec or copySpec leaves it out", name)
			}
			// And the same edit through Update, the one-route path.
			rt2 := NewRouter()
			if _, err := rt2.Apply([]RouteSpec{base()}); err != nil {
				t.Fatal(err)
			}
			before = rt2.Load().Route("r")
			if _, err := rt2.Update([]RouteSpec{spec}); err != nil {
				if name == "Host" || name == "PathPrefix" {
					return // a new match needs Apply, and says so
				}
				t.Fatal(err)
			}
			if rt2.Load().Route("r") == before {
				t.Fatalf("Update did not apply an edit of %s", name)
			}
		})
	}
	for name := range special {
		if !slicesContains(edits, name) {
			t.Errorf("special edit for %s, which is no field of the specs any more", name)
		}
	}
}

// genericEdit changes a field by its kind; it fails the test for a kind
// it does not know.
func genericEdit(t *testing.T, name string) func(*RouteSpec) {
	return func(s *RouteSpec) {
		v := reflect.ValueOf(s).Elem()
		if pool, ok := cutPrefix(name, "Pools."); ok {
			v, name = v.FieldByName("Pools").Index(0), pool
		}
		f := v.FieldByName(name)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Bool:
			f.SetBool(!f.Bool())
		default:
			t.Fatalf("field %s (%s): no edit known for it; decide how sameSpec and copySpec treat it, and add an edit to this test", name, f.Type())
		}
	}
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return s, false
}

func slicesContains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// testMirror is a Mirror by identity: each one is another.
type testMirror struct{ _ int }

func (*testMirror) Close() {}
