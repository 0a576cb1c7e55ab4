package balancer

import (
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestRulesMatch(t *testing.T) {
	re := regexp.MustCompile(`^(?:.*Firefox/1[2-9][0-9].*)$`)
	rules := []RuleSpec{
		{Name: "tenant", Headers: []StringMatch{{Name: "x-tenant", Kind: MatchIn, Values: []string{"acme", "globex"}}}, Pool: "p1"},
		{Name: "beta-cookie", Cookies: []StringMatch{{Name: "beta", Value: "yes"}}, Pool: "p1"},
		{Name: "query", Query: []StringMatch{{Name: "canary key", Kind: MatchPrefix, Value: "on"}}, Pool: "p1"},
		{Name: "firefox", Headers: []StringMatch{{Name: "User-Agent", Kind: MatchRegex, Regex: re}}, Pool: "p1"},
		{Name: "office", Source: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, Pool: "p0"},
		{Name: "both", Headers: []StringMatch{{Name: "X-Region", Value: "eu"}, {Name: "X-Tenant", Value: "initech"}}, Pool: "p1"},
		{Name: "off", Headers: []StringMatch{{Name: "X-Any", Kind: MatchPrefix, Value: ""}}}, // no pool: matches nothing
	}
	s := spec(t, "r", 1, Slots, 0)
	s.Rules = rules
	r := newRouter(t, s).Load().Route("r")
	if !r.NeedsClient() {
		t.Fatal("a source rule needs the client's address")
	}
	for _, tc := range []struct {
		name   string
		h      http.Header
		query  string
		client string
		rule   string // "" = weighted
	}{
		{"no condition holds", http.Header{"X-Tenant": {"hooli"}}, "a=b", "192.0.2.1", ""},
		{"header in", http.Header{"X-Tenant": {"globex"}}, "", "192.0.2.1", "tenant"},
		{"header in, case matters", http.Header{"X-Tenant": {"ACME"}}, "", "192.0.2.1", ""},
		{"cookie among others", http.Header{"Cookie": {"a=1; beta=yes", "c=3"}}, "", "192.0.2.1", "beta-cookie"},
		{"cookie quoted", http.Header{"Cookie": {`beta="yes"`}}, "", "192.0.2.1", "beta-cookie"},
		{"cookie other value", http.Header{"Cookie": {"beta=no"}}, "", "192.0.2.1", ""},
		{"query escaped key and prefix", nil, "x=1&canary+key=on%20please", "192.0.2.1", "query"},
		{"query first value only", nil, "canary%20key=off&canary%20key=on", "192.0.2.1", ""},
		{"query malformed value", nil, "canary+key=%zz", "192.0.2.1", ""},
		{"regex whole value", http.Header{"User-Agent": {"Mozilla/5.0 Firefox/128.0"}}, "", "192.0.2.1", "firefox"},
		{"regex no match", http.Header{"User-Agent": {"Mozilla/5.0 Firefox/99.0"}}, "", "192.0.2.1", ""},
		{"source", nil, "", "10.1.2.3", "office"},
		{"source v4-mapped", nil, "", "::ffff:10.1.2.3", "office"},
		{"all conditions of a rule", http.Header{"X-Region": {"eu"}, "X-Tenant": {"initech"}}, "", "192.0.2.1", "both"},
		{"one condition missing", http.Header{"X-Region": {"eu"}}, "", "192.0.2.1", ""},
		{"first rule wins", http.Header{"X-Tenant": {"acme"}}, "", "10.1.0.9", "tenant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.h
			if h == nil {
				h = http.Header{}
			}
			c := r.Choose(&Request{Header: h, RawQuery: tc.query, Client: netip.MustParseAddr(tc.client)})
			if tc.rule == "" {
				if c.Via != ViaWeight || c.Rule != nil || c.Pool.Name != "p0" {
					t.Fatalf("got via %s rule %v pool %s, want the weighted pick (p0)", c.Via, c.Rule, c.Pool.Name)
				}
				return
			}
			if c.Via != ViaRule || c.Rule == nil || c.Rule.Name != tc.rule {
				t.Fatalf("got via %s rule %v, want rule %s", c.Via, c.Rule, tc.rule)
			}
			if c.Pool != c.Rule.Pool || c.Instance == nil {
				t.Fatalf("rule %s: pool %v instance %v", tc.rule, c.Pool, c.Instance)
			}
		})
	}
}

// A rule whose pool has no available instance gives way to the weighted
// pick: an operator's rule is not an explicit preview.
func TestRuleToAnEmptyPoolFallsThrough(t *testing.T) {
	s := spec(t, "r", 1, Slots, 0)
	s.Pools[1].Instances = nil
	s.Rules = []RuleSpec{{Name: "all", Headers: []StringMatch{{Name: "X-A", Value: "1"}}, Pool: "p1"}}
	r := newRouter(t, s).Load().Route("r")
	c := r.Choose(&Request{Header: http.Header{"X-A": {"1"}}})
	if c.Via != ViaWeight || c.Pool.Name != "p0" || c.Instance == nil {
		t.Fatalf("got %s to %v", c.Via, c.Pool)
	}
}

func TestAffinityCookie(t *testing.T) {
	for _, secret := range []string{"", "s3cret"} {
		t.Run("secret="+secret, func(t *testing.T) {
			s := spec(t, "r", 1, 8000, 2000)
			s.StickyLow = "p1"
			s.Affinity = &AffinitySpec{Cookie: "cd", TTL: 24 * time.Hour, Secure: SecureAuto, SameSite: http.SameSiteLaxMode, Path: "/", Secret: secret}
			r := newRouter(t, s).Load().Route("r")
			c := r.Choose(&Request{Header: http.Header{}})
			if c.Via != ViaAffinity || c.NewBucket < 0 || c.NewBucket >= Slots {
				t.Fatalf("a client without the cookie: via %s bucket %d", c.Via, c.NewBucket)
			}
			line := r.AffinityCookie(c.NewBucket, false)
			if !strings.HasPrefix(line, "cd=1.") || !strings.Contains(line, "; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax") || strings.Contains(line, "Secure") {
				t.Fatalf("Set-Cookie %q", line)
			}
			if tl := r.AffinityCookie(c.NewBucket, true); !strings.HasSuffix(tl, "; Secure") {
				t.Fatalf("over TLS with secure auto: %q", tl)
			}
			// The cookie sent back routes by its bucket, and sets nothing.
			resp := http.Response{Header: http.Header{"Set-Cookie": {line}}}
			ck := resp.Cookies()[0]
			back := http.Header{"Cookie": {"other=1; " + ck.Name + "=" + ck.Value}}
			c2 := r.Choose(&Request{Header: back})
			want := "p0"
			if c.NewBucket < 2000 {
				want = "p1"
			}
			if c2.Via != ViaAffinity || c2.NewBucket != -1 || c2.Pool.Name != want || c.Pool.Name != want {
				t.Fatalf("bucket %d: first %s, back %s (new bucket %d), want %s", c.NewBucket, c.Pool.Name, c2.Pool.Name, c2.NewBucket, want)
			}
			// Values that are not this route's cookie are replaced.
			bad := []string{"", "1.", "1.10000", "1.0042", "1.-1", "2.42", "1.42x", "p1", "1.42.00000000000000000", "1.42.zzzzzzzzzzzzzzzz"}
			if secret != "" {
				bad = append(bad, "1.42") // unsigned
				other := spec(t, "other", 1, 8000, 2000)
				other.Affinity = s.Affinity
				or := newRouter(t, other).Load().Route("other")
				_, v, _ := strings.Cut(strings.Split(or.AffinityCookie(42, false), ";")[0], "=")
				bad = append(bad, v) // another route's, same secret
				_, sv, _ := strings.Cut(strings.Split(r.AffinityCookie(42, false), ";")[0], "=")
				bad = append(bad, sv[:len(sv)-1]+string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", sv[len(sv)-1])+1)%16]))
			} else {
				bad = append(bad, "1.42.0123456789abcdef") // signed where none is
			}
			for _, v := range bad {
				c := r.Choose(&Request{Header: http.Header{"Cookie": {"cd=" + v}}})
				if c.NewBucket < 0 {
					t.Errorf("cookie value %q was accepted", v)
				}
			}
		})
	}
}

// The property that makes affinity safe: raising the canary's weight only
// moves clients toward it, and a rollback moves every one back, for any
// bucket a client holds.
func TestAffinityMovesOneWay(t *testing.T) {
	s := spec(t, "r", 1, Slots, 0)
	s.StickyLow = "p1"
	s.Affinity = &AffinitySpec{Cookie: "cd", Path: "/", Secret: "k"}
	rt := newRouter(t, s)
	cookies := make([]http.Header, 2000)
	on := make([]bool, len(cookies))
	for i := range cookies {
		c := rt.Load().Route("r").Choose(&Request{Header: http.Header{}})
		_, v, _ := strings.Cut(strings.Split(rt.Load().Route("r").AffinityCookie(c.NewBucket, false), ";")[0], "=")
		cookies[i] = http.Header{"Cookie": {"cd=" + v}}
	}
	for _, w := range []int{500, 2500, 5000, 10000, 0} {
		s.Pools[0].Weight, s.Pools[1].Weight = Slots-w, w
		if _, err := rt.Apply([]RouteSpec{s}); err != nil {
			t.Fatal(err)
		}
		r := rt.Load().Route("r")
		n := 0
		for i, h := range cookies {
			now := r.Choose(&Request{Header: h}).Pool.Name == "p1"
			if on[i] && !now && w != 0 {
				t.Fatalf("client %d moved back from the canary as its weight rose to %d bp", i, w)
			}
			on[i] = now
			if now {
				n++
			}
		}
		if w == 0 && n != 0 {
			t.Fatalf("%d clients still on the canary after a rollback", n)
		}
		if w == Slots && n != len(cookies) {
			t.Fatalf("%d of %d clients on the canary at 100%%", n, len(cookies))
		}
	}
}

func TestPropagation(t *testing.T) {
	s := spec(t, "r", 1, Slots, 0)
	s.Pools[0].Version, s.Pools[1].Version = "v1", "v2"
	s.PropagateHeader = "x-canary-version"
	s.ForceFrom = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	s.ForceHeader = "X-Pool"
	for _, tc := range []struct {
		name    string
		live    bool
		value   string
		trusted bool
		peer    string
		want    Via
		pool    string
	}{
		{"trusted proxy, live pool", true, "v2", true, "192.0.2.1:1", ViaPropagated, "p1"},
		{"force.allow_from peer", true, "v2", false, "10.0.0.1:1", ViaPropagated, "p1"},
		{"untrusted peer", true, "v2", false, "192.0.2.1:1", ViaWeight, "p0"},
		{"pool not live (rolled back)", false, "v2", true, "192.0.2.1:1", ViaWeight, "p0"},
		{"unknown version", true, "v3", true, "192.0.2.1:1", ViaWeight, "p0"},
		{"stable by version", false, "v1", true, "192.0.2.1:1", ViaPropagated, "p0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.Pools[1].Live = tc.live
			r := newRouter(t, s).Load().Route("r")
			if r.PropagateHeader != "X-Canary-Version" || r.Pools[1].VersionValue()[0] != "v2" {
				t.Fatalf("header %q, version %v", r.PropagateHeader, r.Pools[1].VersionValue())
			}
			c := r.Choose(&Request{Header: http.Header{"X-Canary-Version": {tc.value}}, Peer: tc.peer, TrustedPeer: tc.trusted})
			if c.Via != tc.want || c.Pool.Name != tc.pool {
				t.Fatalf("got %s to %s, want %s to %s", c.Via, c.Pool.Name, tc.want, tc.pool)
			}
		})
	}
}

// The cost of rules on the pick: a route with ten rules (on a few
// headers, a cookie and the query) that a request matches none of,
// against the same route without rules.
func BenchmarkPickRules(b *testing.B) {
	base := spec(b, "r", 4, 9000, 1000)
	plain := newRouter(b, base).Load().Route("r")
	withRules := base
	for i := range 10 {
		var rs RuleSpec
		switch i % 4 {
		case 0:
			rs = RuleSpec{Headers: []StringMatch{{Name: "X-Tenant", Kind: MatchIn, Values: []string{"acme", "globex", "t" + string(rune('a'+i))}}}}
		case 1:
			rs = RuleSpec{Headers: []StringMatch{{Name: "X-Region", Value: "eu-" + string(rune('a'+i))}}}
		case 2:
			rs = RuleSpec{Cookies: []StringMatch{{Name: "beta", Value: "yes"}}}
		case 3:
			rs = RuleSpec{Headers: []StringMatch{{Name: "User-Agent", Kind: MatchPrefix, Value: "canary-bot/"}}}
		}
		rs.Name, rs.Pool = "rule"+string(rune('a'+i)), "p1"
		withRules.Rules = append(withRules.Rules, rs)
	}
	ruled := newRouter(b, withRules).Load().Route("r")
	h := http.Header{"User-Agent": {"Mozilla/5.0"}, "Accept": {"*/*"}, "X-Tenant": {"hooli"}, "Cookie": {"session=abc; theme=dark"}}
	for _, bc := range []struct {
		name string
		r    *Route
	}{{"no-rules", plain}, {"10-rules-none-match", ruled}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			req := &Request{Header: h, RawQuery: "page=2"}
			for b.Loop() {
				bc.r.Choose(req)
			}
		})
	}
	aff := base
	aff.Affinity = &AffinitySpec{Cookie: "cd", Path: "/", Secret: "k"}
	ar := newRouter(b, aff).Load().Route("r")
	_, v, _ := strings.Cut(strings.Split(ar.AffinityCookie(1234, false), ";")[0], "=")
	ah := http.Header{"Cookie": {"session=abc; cd=" + v}}
	b.Run("affinity-signed-cookie", func(b *testing.B) {
		b.ReportAllocs()
		req := &Request{Header: ah}
		for b.Loop() {
			ar.Choose(req)
		}
	})
}

// cookieIn must read a Cookie line as the split-and-trim reading of
// cookieValue does, for any line: the rules' fast scan and the sticky
// key's reading never disagree on what a cookie holds.
func FuzzCookieIn(f *testing.F) {
	for _, s := range []string{"a=1; beta=yes", "xbeta=1; beta=2", "beta=\"q\"", "x=beta=1; beta=3", " beta = 4", "beta", "beta=;beta=5", "\tbeta=6"} {
		f.Add(s, "beta")
	}
	f.Fuzz(func(t *testing.T, line, name string) {
		// Names are tokens (config checks them).
		if name == "" || strings.IndexFunc(name, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
		}) >= 0 {
			return
		}
		got, gok := cookieIn(line, name)
		want, wok := cookieValue(http.Header{"Cookie": {line}}, name)
		if wok && (!gok || got != want) {
			t.Fatalf("line %q name %q: scan %q %v, split %q %v", line, name, got, gok, want, wok)
		}
		if gok && got != "" && !wok {
			t.Fatalf("line %q name %q: scan found %q where the split reading finds none", line, name, got)
		}
	})
}

// The query reading must agree with net/url's on the first value of a
// key, wherever net/url can parse the query.
func FuzzQueryValues(f *testing.F) {
	for _, s := range []string{"a=1&b=2", "canary+key=on%20x", "a=%zz&a=2", "a&a=3", "=x&a=", "a=1;b=2"} {
		f.Add(s, "a")
	}
	f.Fuzz(func(t *testing.T, q, key string) {
		var vs values
		queryValues(q, []string{key}, 0, &vs)
		ref, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		want, ok := ref[key]
		if ok != (vs.present&1 != 0) && ok && want[0] != "" {
			t.Fatalf("query %q key %q: url says %q, scan present=%v", q, key, want, vs.present&1 != 0)
		}
		if ok && vs.present&1 != 0 && vs.v[0] != want[0] {
			t.Fatalf("query %q key %q: url says %q, scan %q", q, key, want[0], vs.v[0])
		}
	})
}
