package config

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"regexp"
	"regexp/syntax"
	"strings"
	"time"
)

// sticky checks the sticky block: the application's key (header or
// cookie), or canaryd's own affinity cookie (set: true), never a mix.
func (v *validator) sticky(rp path, r *Route) {
	st := &r.Sticky
	at := func(k ...any) path { return append(append(path{}, rp...), append([]any{"sticky"}, k...)...) }
	if st.Header != "" && st.Cookie != "" {
		v.add(at(), "set header or cookie, not both")
	}
	v.token(at("header"), st.Header)
	v.token(at("cookie"), st.Cookie)
	st.secret, st.SecretDigest = "", ""
	if !st.Set {
		for _, k := range []struct {
			key string
			set bool
		}{{"ttl", st.TTL != nil}, {"secure", st.Secure != ""}, {"same_site", st.SameSite != ""}, {"domain", st.Domain != ""}, {"path", st.Path != ""}, {"secret_file", st.SecretFile != ""}} {
			if k.set {
				v.add(at(k.key), "applies to the cookie canaryd sets; add set: true (with cookie: NAME), or remove %s", k.key)
			}
		}
		return
	}
	if st.Header != "" {
		v.add(at("header"), "set: true makes canaryd set a cookie of its own; a header key is the application's: remove header, or set")
	}
	if st.Cookie == "" {
		v.add(at("cookie"), "set: true needs the cookie's name: add cookie: NAME (e.g. canary_affinity)")
	}
	if st.TTL != nil && (st.TTL.D() < 0 || (st.TTL.D() > 0 && st.TTL.D() < time.Second)) {
		v.add(at("ttl"), "%v: use 0 for a session cookie, or at least 1s", st.TTL.D())
	}
	switch st.Secure {
	case SecureAuto, SecureAlways, SecureNever:
	default:
		v.add(at("secure"), "%q: use auto, always or never", st.Secure)
	}
	switch st.SameSite {
	case SameSiteLax, SameSiteStrict:
	case SameSiteNone:
		if st.Secure == SecureNever {
			v.add(at("same_site"), "browsers drop a SameSite=None cookie that is not Secure; set secure to auto or always, or same_site to lax")
		}
	default:
		v.add(at("same_site"), "%q: use lax, strict or none", st.SameSite)
	}
	if d := st.Domain; d != "" && (strings.ContainsAny(d, " ;,/:") || strings.Contains(d, "..")) {
		v.add(at("domain"), "%q is not a cookie domain (a host name such as example.com)", d)
	}
	if !strings.HasPrefix(st.Path, "/") || strings.ContainsAny(st.Path, " ;") {
		v.add(at("path"), "%q: a cookie path starts with / and has no space or ';'", st.Path)
	}
	if st.SecretFile != "" {
		b, err := os.ReadFile(st.SecretFile)
		switch {
		case err != nil:
			v.add(at("secret_file"), "%v; create the file with a key (e.g. `openssl rand -hex 32 > FILE`), or remove secret_file", err)
		case len(strings.TrimSpace(string(b))) < 16:
			v.add(at("secret_file"), "%s holds %d characters; a signing key needs at least 16 (e.g. `openssl rand -hex 32 > FILE`)", st.SecretFile, len(strings.TrimSpace(string(b))))
		default:
			st.secret = strings.TrimSpace(string(b))
			sum := sha256.Sum256([]byte("canaryd sticky key digest\x00" + st.secret))
			st.SecretDigest = hex.EncodeToString(sum[:8])
		}
	}
}

// rules checks a route's match rules and compiles their regexes and
// sources, once per load.
func (v *validator) rules(rp path, r *Route) {
	if len(r.Rules) > MaxRules {
		v.add(append(append(path{}, rp...), "rules"), "%d rules; at most %d", len(r.Rules), MaxRules)
	}
	pools := map[string]bool{}
	for _, p := range r.Pools {
		pools[p.Name] = true
	}
	segment := ""
	if r.Rollout != nil {
		segment = r.Rollout.Segment
	}
	names := map[string]bool{}
	distinct := map[string]bool{}
	for i := range r.Rules {
		ru := &r.Rules[i]
		at := func(k ...any) path {
			return append(append(path{}, rp...), append([]any{"rules", named{i, ru.Name}}, k...)...)
		}
		v.name(at("name"), "rule", ru.Name)
		if ru.Name != "" && names[ru.Name] {
			v.add(at("name"), "rule name %q is used twice in route %q; rename one", ru.Name, r.Name)
		}
		names[ru.Name] = true
		switch {
		case ru.Name != "" && ru.Name == segment:
			if ru.Pool != "" {
				v.add(at("pool"), "rule %q is the rollout's segment: the rollout routes it (canary while the release is live, stable after a rollback); remove pool", ru.Name)
			}
		case ru.Pool == "":
			v.add(at("pool"), "missing; name the pool this rule's requests go to")
		case !pools[ru.Pool]:
			v.add(at("pool"), "%q is not a pool of route %q", ru.Pool, r.Name)
		}
		m := &ru.Match
		if len(m.Header)+len(m.Cookie)+len(m.Query)+len(m.Source) == 0 {
			v.add(at("match"), "no condition; give at least one of header, cookie, query or source")
		}
		for _, kind := range []struct {
			key string
			m   map[string]*StringMatch
		}{{"header", m.Header}, {"cookie", m.Cookie}, {"query", m.Query}} {
			for name, sm := range kind.m {
				p := at("match", kind.key, name)
				if kind.key != "query" {
					v.token(p, name)
				} else if name == "" {
					v.add(p, "an empty query parameter name")
				}
				distinct[kind.key+"\x00"+strings.ToLower(name)] = true
				v.stringMatch(p, sm)
			}
		}
		m.source = m.source[:0]
		for k, s := range m.Source {
			pre, err := ParseTrusted(s)
			if err != nil {
				v.add(at("match", "source", k), "%v", err)
				continue
			}
			m.source = append(m.source, pre)
		}
	}
	if len(distinct) > 16 {
		v.add(append(append(path{}, rp...), "rules"), "the rules read %d distinct headers, cookies and query parameters; at most 16 (each request reads them once)", len(distinct))
	}
}

// stringMatch checks one condition: exactly one kind, a regex that
// compiles within bounds.
func (v *validator) stringMatch(p path, m *StringMatch) {
	if m == nil {
		v.add(p, "empty condition; give one of exact, prefix, regex or in")
		return
	}
	n := 0
	for _, set := range []bool{m.Exact != nil, m.Prefix != nil, m.Regex != "", m.In != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		v.add(p, "give exactly one of exact, prefix, regex or in (it has %d)", n)
	}
	if m.In != nil && len(m.In) == 0 {
		v.add(append(append(path{}, p...), "in"), "an empty list matches nothing; list the values")
	}
	m.re = nil
	if m.Regex == "" {
		return
	}
	rp := append(append(path{}, p...), "regex")
	if len(m.Regex) > MaxRegexLength {
		v.add(rp, "%d characters; at most %d", len(m.Regex), MaxRegexLength)
		return
	}
	if _, err := syntax.Parse(m.Regex, syntax.Perl); err != nil {
		v.add(rp, "%q is not an RE2 regular expression: %v (see https://github.com/google/re2/wiki/Syntax)", m.Regex, err)
		return
	}
	anchored := `^(?:` + m.Regex + `)$`
	re, err := syntax.Parse(anchored, syntax.Perl)
	if err != nil {
		v.add(rp, "%q is not an RE2 regular expression: %v", m.Regex, err)
		return
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil || len(prog.Inst) > MaxRegexProgram {
		v.add(rp, "%q compiles to a program too large (over %d instructions); simplify it, or use prefix or in", m.Regex, MaxRegexProgram)
		return
	}
	m.re = regexp.MustCompile(anchored)
}

// propagate checks routes[].propagate.
func (v *validator) propagate(rp path, r *Route) {
	pr := r.Propagate
	if pr == nil {
		return
	}
	at := append(append(path{}, rp...), "propagate", "header")
	if pr.Header == "" {
		v.add(at, "missing; name the header that carries the version (e.g. X-Canary-Version)")
		return
	}
	v.token(at, pr.Header)
	for _, other := range []string{r.Force.Header, r.Sticky.Header, r.Force.SecretHeader} {
		if other != "" && strings.EqualFold(other, pr.Header) {
			v.add(at, "%q is already the route's force or sticky header; use a header of its own", pr.Header)
		}
	}
}

// segment checks rollout.segment.
func (v *validator) segment(at func(k ...any) path, r *Route) {
	seg := r.Rollout.Segment
	if seg == "" {
		return
	}
	if r.Rollout.Strategy == StrategyBlueGreen {
		v.add(at("segment"), "a blue_green rollout switches everyone at once; a segment goes with canary or linear (or remove segment)")
	}
	for _, ru := range r.Rules {
		if ru.Name == seg {
			return
		}
	}
	v.add(at("segment"), "%q is not a rule of route %q; add a rule with that name under rules (its match is the segment)", seg, r.Name)
}
