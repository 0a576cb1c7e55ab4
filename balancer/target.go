package balancer

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Via is how a request's pool was chosen: the access log's routed_by.
type Via uint8

// Ways a pool is chosen, in the order a pick tries them (weight last).
const (
	// ViaWeight: the next slot of the route's schedule.
	ViaWeight Via = iota
	// ViaSticky: the application's own key (sticky.header or
	// sticky.cookie) hashed to a bucket.
	ViaSticky
	// ViaAffinity: canaryd's own affinity cookie (sticky.set), or a
	// bucket drawn for a client that had none.
	ViaAffinity
	// ViaRule: a match rule (routes[].rules); Choice.Rule names it.
	ViaRule
	// ViaForce: the force header or cookie named the pool (a preview).
	ViaForce
	// ViaPropagated: a trusted peer's propagation header named the
	// pool's version (routes[].propagate).
	ViaPropagated
)

func (v Via) String() string {
	switch v {
	case ViaSticky:
		return "sticky"
	case ViaAffinity:
		return "affinity"
	case ViaRule:
		return "rule"
	case ViaForce:
		return "force"
	case ViaPropagated:
		return "propagated"
	}
	return "weight"
}

// Targeted reports traffic chosen for its request's attributes rather
// than by weight: a rule or a propagated version. It is counted apart.
func (v Via) Targeted() bool { return v == ViaRule || v == ViaPropagated }

// Request is what a pick reads of one request.
type Request struct {
	Header http.Header
	// RawQuery is the URL's query, still escaped (read only by query
	// conditions of rules).
	RawQuery string
	// Peer is the connection's address ("host:port"), for force.allow_from
	// and propagation.
	Peer string
	// Client is the client's address for source conditions: the peer, or
	// behind trusted proxies the client they forwarded for. Only read
	// when the route has a source condition (Route.NeedsClient).
	Client netip.Addr
	// TrustedPeer: the peer is one of trusted_proxies, whose propagation
	// header is honoured.
	TrustedPeer bool
}

// Choice is the outcome of a pick.
type Choice struct {
	// Pool chosen (nil when none could be), and its Instance (nil when
	// nothing can serve: the caller answers 503).
	Pool     *Pool
	Instance *Instance
	Via      Via
	// Rule is the rule that matched when Via is ViaRule.
	Rule *Rule
	// NewBucket is the bucket drawn for a client without a valid
	// affinity cookie (the answer sets it: Route.AffinityCookie); -1
	// when none was drawn.
	NewBucket int
}

// MatchKind is how a condition compares a value.
type MatchKind uint8

// Kinds of comparison.
const (
	MatchExact MatchKind = iota
	MatchPrefix
	MatchRegex // RE2, the whole value
	MatchIn    // any of Values, exactly
)

// StringMatch is one condition on a named header, cookie or query
// parameter. A condition on something the request lacks does not hold.
type StringMatch struct {
	Name   string // canonical for headers
	Kind   MatchKind
	Value  string         // exact, prefix
	Values []string       // in
	Regex  *regexp.Regexp // regex, anchored at both ends by its maker
}

func (m *StringMatch) holds(v string) bool {
	switch m.Kind {
	case MatchExact:
		return v == m.Value
	case MatchPrefix:
		return strings.HasPrefix(v, m.Value)
	case MatchRegex:
		return m.Regex.MatchString(v)
	case MatchIn:
		return slices.Contains(m.Values, v)
	}
	return false
}

func (m *StringMatch) equal(o *StringMatch) bool {
	if m.Name != o.Name || m.Kind != o.Kind || m.Value != o.Value || !slices.Equal(m.Values, o.Values) || (m.Regex == nil) != (o.Regex == nil) {
		return false
	}
	return m.Regex == nil || m.Regex.String() == o.Regex.String()
}

// RuleSpec is one match rule: when every condition holds, the request
// goes to Pool, whatever its weight.
type RuleSpec struct {
	Name    string
	Headers []StringMatch
	Cookies []StringMatch
	Query   []StringMatch
	// Source: the client's address is in one of these; nil: any.
	Source []netip.Prefix
	// Pool the matching requests go to. "" makes the rule match nothing
	// (a rollout's segment before the rollout routes it).
	Pool string
}

func (r *RuleSpec) equal(o *RuleSpec) bool {
	eq := func(a, b []StringMatch) bool {
		return slices.EqualFunc(a, b, func(x, y StringMatch) bool { return x.equal(&y) })
	}
	return r.Name == o.Name && r.Pool == o.Pool && slices.Equal(r.Source, o.Source) &&
		eq(r.Headers, o.Headers) && eq(r.Cookies, o.Cookies) && eq(r.Query, o.Query)
}

func (r RuleSpec) clone() RuleSpec {
	r.Headers, r.Cookies, r.Query = slices.Clone(r.Headers), slices.Clone(r.Cookies), slices.Clone(r.Query)
	r.Source = slices.Clone(r.Source)
	return r
}

// Rule is a compiled rule of a route.
type Rule struct {
	Name string
	// Pool the matching requests go to (nil: the rule is off).
	Pool *Pool
	// conds index the route's distinct names: a name is read once per
	// request however many rules test it.
	headers, cookies, query []cond
	source                  []netip.Prefix
	// need has bit i set for each name i the rule's conditions read: a
	// rule that needs a name the request lacks fails on one AND.
	need uint32
}

type cond struct {
	slot int // index into the route's values of this kind
	m    StringMatch
}

// rules is a route's compiled rules and the distinct names they read.
type rules struct {
	list                        []*Rule
	headers, cookies, queryKeys []string
	needsClient                 bool
}

// maxNames bounds the distinct headers, cookies and query keys (all
// together) a route's rules may read: the values of one request are held
// on the stack, and zeroed for each.
const maxNames = 16

func compileRules(specs []RuleSpec, pools []*Pool) (rules, error) {
	var rs rules
	slot := func(names *[]string, n string) int {
		if i := slices.Index(*names, n); i >= 0 {
			return i
		}
		*names = append(*names, n)
		return len(*names) - 1
	}
	for _, s := range specs {
		r := &Rule{Name: s.Name, source: s.Source}
		if s.Pool != "" {
			for _, p := range pools {
				if p.Name == s.Pool {
					r.Pool = p
				}
			}
			if r.Pool == nil {
				return rules{}, fmt.Errorf("rule %q: pool %q is not a pool of the route", s.Name, s.Pool)
			}
		}
		for _, m := range s.Headers {
			m.Name = http.CanonicalHeaderKey(m.Name)
			r.headers = append(r.headers, cond{slot(&rs.headers, m.Name), m})
		}
		for _, m := range s.Cookies {
			r.cookies = append(r.cookies, cond{slot(&rs.cookies, m.Name), m})
		}
		for _, m := range s.Query {
			r.query = append(r.query, cond{slot(&rs.queryKeys, m.Name), m})
		}
		rs.needsClient = rs.needsClient || len(s.Source) > 0
		rs.list = append(rs.list, r)
	}
	if n := len(rs.headers) + len(rs.cookies) + len(rs.queryKeys); n > maxNames {
		return rules{}, fmt.Errorf("rules read %d distinct headers, cookies and query parameters; at most %d", n, maxNames)
	}
	// One array of values for the three kinds: cookies after the
	// headers, query keys after the cookies.
	for _, r := range rs.list {
		for k := range r.cookies {
			r.cookies[k].slot += len(rs.headers)
		}
		for k := range r.query {
			r.query[k].slot += len(rs.headers) + len(rs.cookies)
		}
	}
	for _, r := range rs.list {
		for _, cs := range [][]cond{r.headers, r.cookies, r.query} {
			for _, c := range cs {
				r.need |= 1 << c.slot
			}
		}
	}
	return rs, nil
}

// values are one request's values of the names a route's rules read,
// each looked up once: bit i of present says whether name i was there.
type values struct {
	v       [maxNames]string
	present uint32
}

// match returns the first rule whose conditions all hold, nil when none
// does. Each header the rules name is looked up once, and the Cookie
// header and the query are each scanned once, before the rules are
// tried: a rule that needs a name the request lacks then fails on one
// AND.
func (rs *rules) match(req *Request) *Rule {
	var vs values
	for i, n := range rs.headers {
		if v := req.Header[n]; len(v) > 0 {
			vs.v[i], vs.present = v[0], vs.present|1<<i
		}
	}
	if len(rs.cookies) > 0 {
		cookieValues(req.Header, rs.cookies, len(rs.headers), &vs)
	}
	if len(rs.queryKeys) > 0 && req.RawQuery != "" {
		queryValues(req.RawQuery, rs.queryKeys, len(rs.headers)+len(rs.cookies), &vs)
	}
	for _, r := range rs.list {
		if r.Pool == nil || vs.present&r.need != r.need {
			continue
		}
		if vs.all(r.headers) && vs.all(r.cookies) && vs.all(r.query) && r.fromSource(req) {
			return r
		}
	}
	return nil
}

func (r *Rule) fromSource(req *Request) bool {
	if r.source == nil {
		return true
	}
	a := req.Client.Unmap()
	for _, p := range r.source {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// all reports whether every condition holds on the values read.
func (vs *values) all(conds []cond) bool {
	for k := range conds {
		c := &conds[k]
		if !c.m.holds(vs.v[c.slot]) {
			return false
		}
	}
	return true
}

// queryValues takes the first value of each named key from a raw query,
// in one pass; a key or value is unescaped only when it has an escape.
func queryValues(q string, keys []string, off int, out *values) {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(k, "%+") {
			if u, err := url.QueryUnescape(k); err == nil {
				k = u
			}
		}
		i := slices.Index(keys, k)
		if i < 0 || out.present&(1<<(off+i)) != 0 {
			continue
		}
		i += off
		if strings.ContainsAny(v, "%+") {
			u, err := url.QueryUnescape(v)
			if err != nil {
				continue // a malformed value matches nothing
			}
			v = u
		}
		out.v[i], out.present = v, out.present|1<<i
	}
}

// cookieValues takes the first value of each named cookie from the
// Cookie headers: a search for "name=" at a cookie's start, per name.
func cookieValues(h http.Header, names []string, off int, out *values) {
	for _, line := range h["Cookie"] {
		for i, name := range names {
			if out.present&(1<<(off+i)) != 0 {
				continue
			}
			if v, ok := cookieIn(line, name); ok {
				out.v[off+i], out.present = v, out.present|1<<(off+i)
			}
		}
	}
}

// cookieIn finds cookie name in one Cookie header line.
func cookieIn(line, name string) (string, bool) {
	for from := 0; ; {
		k := strings.Index(line[from:], name)
		if k < 0 {
			return "", false
		}
		k += from
		end := k + len(name)
		from = end
		if end >= len(line) || line[end] != '=' {
			continue
		}
		// What comes before must be a cookie's start: the line's or a
		// ';', with only white space (as strings.TrimSpace sees it) between.
		before := line[:k]
		for before != "" {
			r, n := utf8.DecodeLastRuneInString(before)
			if !unicode.IsSpace(r) {
				break
			}
			before = before[:len(before)-n]
		}
		if before != "" && before[len(before)-1] != ';' {
			continue // the end of another cookie's name, or inside a value
		}
		v := line[end+1:]
		if j := strings.IndexByte(v, ';'); j >= 0 {
			v = v[:j]
		}
		v = strings.TrimRightFunc(v, unicode.IsSpace)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
}
