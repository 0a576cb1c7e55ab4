package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"canaryd/grpccode"
	"canaryd/tlsfiles"
	"canaryd/upstream"

	"go.yaml.in/yaml/v3"
)

type validator struct {
	root     *yaml.Node
	problems []Problem
	// trusted is trusted_proxies parsed (for force.allow_from).
	trusted []netip.Prefix
}

// path is a location in the document: string keys and int indices.
type path []any

func (p path) String() string {
	var b strings.Builder
	for i, e := range p {
		switch e := e.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", e)
		case string:
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(e)
		case named:
			fmt.Fprintf(&b, "[%d](%s)", e.i, e.name)
		}
	}
	return b.String()
}

// named is a list index shown with the item's name, e.g. routes[0](web).
type named struct {
	i    int
	name string
}

func (v *validator) add(p path, format string, args ...any) {
	v.problems = append(v.problems, Problem{Line: v.line(p), Path: p.String(), Msg: fmt.Sprintf(format, args...)})
}

// line finds the deepest node of p that exists in the document: the key's
// line for a mapping entry, the item's line for a list element.
func (v *validator) line(p path) int {
	n, line := v.root, v.root.Line
	for _, e := range p {
		var next *yaml.Node
		switch e := e.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == e {
						next, line = n.Content[i+1], n.Content[i].Line
						break
					}
				}
			}
		case int:
			if next = seqItem(n, e); next != nil {
				line = next.Line
			}
		case named:
			if next = seqItem(n, e.i); next != nil {
				line = next.Line
			}
		}
		if next == nil {
			break
		}
		n = next
	}
	return line
}

func seqItem(n *yaml.Node, i int) *yaml.Node {
	if n.Kind == yaml.SequenceNode && i < len(n.Content) {
		return n.Content[i]
	}
	return nil
}

func (v *validator) config(c *Config) {
	v.listenAddr(path{"listen"}, c.Listen)
	if c.Admin.Listen != AdminOff {
		v.listenAddr(path{"admin", "listen"}, c.Admin.Listen)
		if c.Admin.Listen == c.Listen && !strings.HasSuffix(c.Listen, ":0") {
			v.add(path{"admin", "listen"}, "%q is also the proxy listen address; give the admin listener its own port", c.Admin.Listen)
		}
		if c.Admin.Pprof && c.Admin.TokenFile == "" && !loopbackListen(c.Admin.Listen) {
			v.add(path{"admin", "pprof"}, "profiles show the process's internals, and admin.listen %q is reachable beyond this machine without a token; set admin.token_file, or bind admin.listen to 127.0.0.1", c.Admin.Listen)
		}
	}
	if c.Cluster != nil {
		v.cluster(c.Cluster)
	}
	if c.Server.MaxRequestBodyBytes < 0 {
		v.add(path{"server", "max_request_body_bytes"}, "must be 0 (no cap) or more")
	}
	if c.Server.MaxHeaderBytes < 0 {
		v.add(path{"server", "max_header_bytes"}, "must be positive")
	}
	v.overload(c)
	if c.AccessLog.Sample < 1 {
		v.add(path{"access_log", "sample"}, "%d: log one request in N, N at least 1", c.AccessLog.Sample)
	}
	if c.Reload.Debounce.D() > 10*time.Second {
		v.add(path{"reload", "debounce"}, "%v is longer than 10s; edits would take that long to apply", c.Reload.Debounce)
	}
	if c.Reload.PollInterval.D() < time.Second {
		v.add(path{"reload", "poll_interval"}, "%v is shorter than 1s; poll less often (events do the fast path)", c.Reload.PollInterval)
	}
	if c.Upstream.MaxIdleConnsPerHost < 0 {
		v.add(path{"upstream", "max_idle_conns_per_host"}, "must be positive")
	}
	if b := c.Upstream.MaxResponseHeaderBytes; b < 1024 || b > MaxResponseHeaderBytesLimit {
		v.add(path{"upstream", "max_response_header_bytes"}, "%d is outside 1024 to %d (1 MiB); the default is %d", b, MaxResponseHeaderBytesLimit, DefaultMaxResponseHeaderBytes)
	}
	for i, s := range c.TrustedProxies {
		p, err := ParseTrusted(s)
		if err != nil {
			v.add(path{"trusted_proxies", i}, "%v", err)
			continue
		}
		v.trusted = append(v.trusted, p)
	}
	c.trusted = v.trusted
	v.tls(c)
	v.http2(&c.Server.HTTP2)
	if c.Server.ProxyProtocol && len(c.TrustedProxies) == 0 {
		v.add(path{"server", "proxy_protocol"}, "only peers in trusted_proxies may send a PROXY header, and the list is empty; list the load balancers' addresses there")
	}
	c.GRPC.errors = 0
	for i, s := range c.GRPC.ErrorCodes {
		code, err := grpccode.Parse(s)
		if err != nil {
			v.add(path{"grpc", "error_codes", i}, "%v", err)
			continue
		}
		c.GRPC.errors |= grpccode.Of(code)
	}
	v.includes(c)
	if len(c.Routes) == 0 && len(c.Include) == 0 {
		v.add(path{"routes"}, "no routes; add at least one route with pools")
	}
	v.routes(c.Routes)
}

// routes checks a list of routes (the main file's, or an included
// file's) and that names and matches are unique in it.
func (v *validator) routes(routes []Route) {
	routeNames := map[string]int{}
	matches := map[string]string{}
	for i := range routes {
		r := &routes[i]
		rp := path{"routes", named{i, r.Name}}
		v.route(rp, r)
		if r.Name != "" {
			if j, dup := routeNames[r.Name]; dup {
				v.add(append(rp, "name"), "route name %q is already used by routes[%d]; names must be unique", r.Name, j)
			}
			routeNames[r.Name] = i
		}
		key := strings.ToLower(r.Match.Host) + " " + r.Match.PathPrefix
		if other, dup := matches[key]; dup {
			v.add(append(rp, "match"), "same host %q and path_prefix %q as route %q; one of them could never match", r.Match.Host, r.Match.PathPrefix, other)
		}
		matches[key] = r.Name
	}
}

// Compare modes of mirrored answers.
const (
	CompareStatus  = "status"
	CompareHeaders = "headers"
	CompareBody    = "body"
)

func (v *validator) shadowOptions(p path, o *ShadowOptions) {
	at := func(k ...any) path { return append(append(path{}, p...), k...) }
	for i, m := range o.Methods {
		if !IsMethodToken(m) {
			v.add(at("methods", i), "%q is not an HTTP method", m)
		}
	}
	v.token(at("header"), o.Header)
	if o.MaxBodyBytes < 0 || o.MaxBodyBytes > 64<<20 {
		v.add(at("max_body_bytes"), "%d is outside 0 to 64 MiB (bodies are held in memory to be sent twice)", o.MaxBodyBytes)
	}
	if o.Queue < 1 || o.Queue > 100000 {
		v.add(at("queue"), "%d is outside 1 to 100000", o.Queue)
	}
	if o.Concurrency < 1 || o.Concurrency > 1024 {
		v.add(at("concurrency"), "%d is outside 1 to 1024", o.Concurrency)
	}
	if o.Timeout.D() <= 0 {
		v.add(at("timeout"), "must be above 0")
	}
	for i, c := range o.Compare {
		switch c {
		case CompareStatus, CompareHeaders, CompareBody:
		default:
			v.add(at("compare", i), "%q is not a comparison; use status, headers or body", c)
		}
	}
	if o.CompareMaxBytes < 1 || o.CompareMaxBytes > 64<<20 {
		v.add(at("compare_max_bytes"), "%d is outside 1 to 64 MiB", o.CompareMaxBytes)
	}
}

// IsMethodToken reports whether m is an upper-case HTTP method token.
func IsMethodToken(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// force checks who may force a pool, and parses it: allow_from into
// prefixes, the secret file into the secret.
func (v *validator) force(p path, f *Force) {
	at := func(k ...any) path { return append(append(path{}, p...), k...) }
	f.allow = nil
	for i, s := range f.AllowFrom {
		if s == "trusted_proxies" {
			if len(v.trusted) == 0 {
				v.add(at("allow_from", i), "the top-level trusted_proxies is empty; list the proxies there, or CIDRs here")
			}
			f.allow = append(f.allow, v.trusted...)
			continue
		}
		pre, err := ParseTrusted(s)
		if err != nil {
			v.add(at("allow_from", i), "%v (or the word trusted_proxies)", err)
			continue
		}
		f.allow = append(f.allow, pre)
	}
	v.token(at("secret_header"), f.SecretHeader)
	f.secret = ""
	if f.SecretFile != "" {
		b, err := os.ReadFile(f.SecretFile)
		switch {
		case err != nil:
			v.add(at("secret_file"), "%v; create the file with the secret, or remove the key", err)
		case strings.TrimSpace(string(b)) == "":
			v.add(at("secret_file"), "%s is empty; put the secret in it, or remove the key", f.SecretFile)
		default:
			f.secret = strings.TrimSpace(string(b))
		}
	}
	if (f.SecretFile != "" || len(f.AllowFrom) > 0) && f.Header == "" && f.Cookie == "" {
		v.add(p, "allow_from and secret_file restrict a force header or cookie, and neither is set")
	}
}

// tls checks the listener's TLS block, loading each pair and CA file so
// that a broken one is refused at validate (and reload) time, not at the
// first handshake.
func (v *validator) tls(c *Config) {
	t := &c.TLS
	at := func(k ...any) path { return append(path{"tls"}, k...) }
	if _, err := tlsfiles.MinVersion(t.MinVersion); err != nil {
		v.add(at("min_version"), "%v", err)
	}
	if _, err := tlsfiles.CipherSuites(t.Ciphers); err != nil {
		v.add(at("ciphers"), "%v", err)
	} else if t.MinVersion == "1.3" && len(t.Ciphers) > 0 {
		v.add(at("ciphers"), "only TLS 1.2 uses them, and min_version is 1.3; remove tls.ciphers")
	}
	if _, err := tlsfiles.Curves(t.Curves); err != nil {
		v.add(at("curves"), "%v", err)
	}
	if d := t.SessionTicketRotation.D(); d < MinTicketRotation {
		v.add(at("session_ticket_rotation"), "%v is under %v", t.SessionTicketRotation, MinTicketRotation)
	}
	if !t.Enabled() {
		for k, set := range map[string]bool{"key_file": t.KeyFile != "", "client_ca_file": t.ClientCAFile != "", "redirect_http": t.RedirectHTTP != ""} {
			if set {
				v.add(at(k), "is set but TLS is not on; set tls.cert_file and tls.key_file (or tls.certificates)")
			}
		}
		return
	}
	if c.Server.H2C {
		v.add(path{"server", "h2c"}, "h2c is HTTP/2 without TLS, and the listener serves TLS (which offers HTTP/2 by ALPN); remove server.h2c")
	}
	if t.CertFile != "" || t.KeyFile != "" {
		v.pair(at(), t.CertFile, t.KeyFile)
	}
	for i, p := range t.Certificates {
		v.pair(at("certificates", i), p.CertFile, p.KeyFile)
	}
	switch {
	case t.ClientCAFile == "" && t.ClientAuth != "":
		v.add(at("client_auth"), "needs tls.client_ca_file (the CAs client certificates are checked against)")
	case t.ClientAuth == "", t.ClientAuth == ClientAuthRequire, t.ClientAuth == ClientAuthVerifyIfGiven:
	default:
		v.add(at("client_auth"), "%q is not a mode; use %s or %s", t.ClientAuth, ClientAuthRequire, ClientAuthVerifyIfGiven)
	}
	if t.ClientCAFile != "" {
		if _, err := tlsfiles.NewClient(tlsfiles.ClientOptions{CAFile: t.ClientCAFile}); err != nil {
			v.add(at("client_ca_file"), "%v", err)
		}
	}
	if t.RedirectHTTP != "" {
		v.listenAddr(at("redirect_http"), t.RedirectHTTP)
		if (t.RedirectHTTP == c.Listen || t.RedirectHTTP == c.Admin.Listen) && !strings.HasSuffix(t.RedirectHTTP, ":0") {
			v.add(at("redirect_http"), "%q is already the proxy's or the admin's address; give it its own port (usually :80)", t.RedirectHTTP)
		}
	}
}

// pair checks a certificate and key file by loading them.
func (v *validator) pair(p path, certFile, keyFile string) {
	at := func(k string) path { return append(append(path{}, p...), k) }
	switch {
	case certFile == "":
		v.add(at("cert_file"), "is missing; name the PEM certificate file that goes with key_file")
	case keyFile == "":
		v.add(at("key_file"), "is missing; name the PEM private key file of cert_file")
	default:
		if _, err := tlsfiles.NewServer(tlsfiles.ServerOptions{Pairs: []tlsfiles.Pair{{CertFile: certFile, KeyFile: keyFile}}}); err != nil {
			v.add(at("cert_file"), "%v", err)
		}
	}
}

// overload checks server.limits, the body and write timeouts, and
// upstream.request_buffering.
func (v *validator) overload(c *Config) {
	at := func(k ...any) path { return append(path{"server"}, k...) }
	l := c.Server.Limits
	for _, e := range []struct {
		key string
		n   int
	}{{"max_connections", l.MaxConnections}, {"max_connections_per_client", l.MaxConnectionsPerClient},
		{"max_requests_in_flight", l.MaxRequestsInFlight}, {"max_requests_in_flight_per_client", l.MaxRequestsInFlightPerClient}} {
		if e.n < 0 || e.n > 10_000_000 {
			v.add(at("limits", e.key), "%d is outside 1 to 10000000 (leave it out for the default derived from the descriptor limit)", e.n)
		}
	}
	if l.MaxConnections > 0 && l.MaxConnectionsPerClient > l.MaxConnections {
		v.add(at("limits", "max_connections_per_client"), "%d is above max_connections (%d); lower it, or raise max_connections", l.MaxConnectionsPerClient, l.MaxConnections)
	}
	if l.MaxRequestsInFlight > 0 && l.MaxRequestsInFlightPerClient > l.MaxRequestsInFlight {
		v.add(at("limits", "max_requests_in_flight_per_client"), "%d is above max_requests_in_flight (%d); lower it, or raise max_requests_in_flight", l.MaxRequestsInFlightPerClient, l.MaxRequestsInFlight)
	}
	if d := c.Server.RequestBodyTimeout.D(); d < 100*time.Millisecond {
		v.add(at("request_body_timeout"), "%v is under 100ms; a body's packets may be that far apart on a real network", c.Server.RequestBodyTimeout)
	}
	if d := c.Server.ClientWriteTimeout.D(); d < 100*time.Millisecond {
		v.add(at("client_write_timeout"), "%v is under 100ms; a client's reads may be that far apart on a real network", c.Server.ClientWriteTimeout)
	}
	if r := c.Server.MinRequestBodyRate; r.BytesPerSecond < 0 {
		v.add(at("min_request_body_rate", "bytes_per_second"), "must be 0 (off) or more")
	} else if r.BytesPerSecond == 0 && r.Grace != 0 {
		v.add(at("min_request_body_rate", "grace"), "is set but bytes_per_second is not; set the rate, or remove grace")
	} else if r.Grace.D() < 0 {
		v.add(at("min_request_body_rate", "grace"), "must not be negative")
	}
	if n := c.Upstream.RequestBuffering.Max(); n < 0 || n > MaxRequestBufferBytes {
		v.add(path{"upstream", "request_buffering", "max_bytes"}, "%d is outside 0 (off) to %d (16 MiB; bodies buffered are held in memory)", n, MaxRequestBufferBytes)
	}
}

// loopbackListen reports an address only this machine can reach.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func (v *validator) http2(h *HTTP2) {
	at := func(k string) path { return path{"server", "http2", k} }
	if n := h.MaxConcurrentStreams; n < 1 || n > 10000 {
		v.add(at("max_concurrent_streams"), "%d is not from 1 to 10000", n)
	}
	if n := h.MaxReceiveBufferPerStream; n < 16<<10 || n > 16<<20 {
		v.add(at("max_receive_buffer_per_stream"), "%d is not from 16384 to 16777216", n)
	}
	if n := h.MaxReceiveBufferPerConnection; n < h.MaxReceiveBufferPerStream || n > 256<<20 {
		v.add(at("max_receive_buffer_per_connection"), "%d is not from max_receive_buffer_per_stream (%d) to 268435456", n, h.MaxReceiveBufferPerStream)
	}
	if n := h.MaxReadFrameSize; n < 16<<10 || n > h.MaxReceiveBufferPerStream {
		v.add(at("max_read_frame_size"), "%d is not from 16384 to max_receive_buffer_per_stream (%d): a frame larger than a stream's window breaks flow control", n, h.MaxReceiveBufferPerStream)
	}
	if h.SendPingTimeout.D() > 0 && h.SendPingTimeout.D() < time.Second {
		v.add(at("send_ping_timeout"), "%v is under 1s; PING less often (or 0 for never)", h.SendPingTimeout)
	}
}

// pool checks a pool's protocol against its instances' scheme, and
// loads its TLS files.
func (v *validator) pool(pp path, p *Pool, schemes map[string]bool) {
	at := func(k ...any) path { return append(append(path{}, pp...), k...) }
	switch p.Protocol {
	case upstream.HTTP1:
	case upstream.H2:
		if schemes["http"] {
			v.add(at("protocol"), "h2 is HTTP/2 over TLS, for https:// instances; use h2c for plain http:// instances")
		}
	case upstream.H2C:
		if schemes["https"] {
			v.add(at("protocol"), "h2c is HTTP/2 without TLS, for http:// instances; use h2 for https:// instances")
		}
	default:
		v.add(at("protocol"), "%q is not a protocol; use %s, %s or %s", p.Protocol, upstream.HTTP1, upstream.H2, upstream.H2C)
	}
	if t := p.TLS; t != nil {
		if schemes["http"] {
			v.add(at("tls"), "applies to https:// instances, and this pool has http:// ones; write the instances as https://host:port")
		}
		_, err := tlsfiles.NewClient(tlsfiles.ClientOptions{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile})
		if err != nil {
			v.add(at("tls"), "%v", err)
		}
	}
	if h := p.Health; h != nil && h.Active.GRPC && p.Protocol == upstream.HTTP1 {
		v.add(at("health", "active", "grpc"), "gRPC health probes need HTTP/2; set the pool's protocol to h2c (or h2 for https:// instances)")
	}
}

func (v *validator) listenAddr(p path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(p, "%q is not host:port (e.g. \":8080\" or \"127.0.0.1:9901\")", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.add(p, "port %q is not a number from 0 to 65535", port)
	}
	if host != "" && strings.ContainsAny(host, " /") {
		v.add(p, "host %q is not a host name or IP", host)
	}
}

// mirror checks a route's mirror block.
func (v *validator) mirror(mp path, r *Route) {
	m := r.Mirror
	found := false
	for _, p := range r.Pools {
		found = found || p.Name == m.Pool
	}
	if !found {
		v.add(append(mp, "pool"), "%q is not a pool of route %q; name the pool that gets the copies", m.Pool, r.Name)
	}
	if m.Percent < 0 || m.Percent > Full {
		v.add(append(mp, "percent"), "must be from 0.01 to 100")
	}
	if r.Rollout != nil && r.Rollout.Shadow != nil {
		v.add(mp, "the route's rollout has a shadow phase, which mirrors to its canary; keep one of the two")
	}
	v.shadowOptions(mp, &m.Options)
}

func (v *validator) route(rp path, r *Route) {
	v.name(append(rp, "name"), "route", r.Name)
	if !strings.HasPrefix(r.Match.PathPrefix, "/") {
		v.add(append(rp, "match", "path_prefix"), "%q must start with /", r.Match.PathPrefix)
	}
	if h := r.Match.Host; h != "" && (strings.ContainsAny(h, " /:") || strings.Contains(h, "..")) {
		v.add(append(rp, "match", "host"), "%q is not a host name (leave the port out)", h)
	}
	switch r.Balance {
	case BalanceRoundRobin, BalanceLeastRequest:
	default:
		v.add(append(rp, "balance"), "%q is not a balance policy; use %s or %s", r.Balance, BalanceRoundRobin, BalanceLeastRequest)
	}
	v.sticky(rp, r)
	v.rules(rp, r)
	v.propagate(rp, r)
	v.token(append(rp, "force", "header"), r.Force.Header)
	v.token(append(rp, "force", "cookie"), r.Force.Cookie)
	v.force(append(rp, "force"), &r.Force)
	if r.Mirror != nil {
		v.mirror(append(append(path{}, rp...), "mirror"), r)
	}
	v.health(append(rp, "health"), &r.Health)
	if len(r.Pools) == 0 {
		v.add(append(rp, "pools"), "no pools; a route needs at least one pool with instances")
		return
	}
	if len(r.Pools) > MaxPools {
		v.add(append(rp, "pools"), "%d pools; at most %d", len(r.Pools), MaxPools)
	}
	if r.Rollout != nil {
		v.rollout(append(rp, "rollout"), r)
	}
	sum, sumKnown := 0, true
	names := map[string]bool{}
	for j := range r.Pools {
		p := &r.Pools[j]
		pp := append(append(path{}, rp...), "pools", named{j, p.Name})
		v.name(append(pp, "name"), "pool", p.Name)
		if p.Name != "" && names[p.Name] {
			v.add(append(pp, "name"), "pool name %q is used twice in route %q", p.Name, r.Name)
		}
		names[p.Name] = true
		if p.Health != nil {
			v.health(append(pp, "health"), p.Health)
		}
		sum += p.Weight.BasisPoints()
		sumKnown = sumKnown && p.Weight != invalidPercent
		seen := map[string]int{}
		schemes := map[string]bool{}
		v.instanceSource(pp, p, schemes)
		p.urls = p.urls[:0]
		for k, in := range p.Instances {
			ip := append(append(path{}, pp...), "instances", k)
			u, err := ParseInstance(in)
			if err != nil {
				v.add(ip, "%v", err)
				continue
			}
			p.urls = append(p.urls, u)
			if first, dup := seen[u.String()]; dup {
				v.add(ip, "%q is already instances[%d] of this pool; list each instance once", in, first)
			}
			seen[u.String()] = k
			schemes[u.Scheme] = true
		}
		v.pool(pp, p, schemes)
		if p.Health == nil && r.Health.Active.GRPC && p.Protocol == upstream.HTTP1 {
			v.add(append(rp, "health", "active", "grpc"), "gRPC health probes need HTTP/2, and pool %q speaks http1; set its protocol to h2c (or h2)", p.Name)
		}
	}
	if sumKnown && sum != Full.BasisPoints() {
		v.add(append(rp, "pools"), "weights of route %q sum to %s%%, not 100; adjust them so they add up to exactly 100", r.Name, Percent(sum))
	}
}

// instanceSource checks that a pool has exactly one of instances,
// discovery and registered, and the one it has.
func (v *validator) instanceSource(pp path, p *Pool, schemes map[string]bool) {
	at := func(k ...any) path { return append(append(path{}, pp...), k...) }
	var have []string
	if len(p.Instances) > 0 {
		have = append(have, "instances")
	}
	if p.Discovery != nil {
		have = append(have, "discovery")
	}
	if p.Registered {
		have = append(have, "registered")
	}
	switch len(have) {
	case 0:
		v.add(at("instances"), "no instances; list host:port or http(s)://host:port entries, or find them with discovery: { dns: NAME, port: N }, or take registrations with registered: true")
		return
	case 1:
	default:
		v.add(at(have[1]), "a pool has exactly one of instances, discovery and registered, and this one has %s; keep one", strings.Join(have, " and "))
		return
	}
	v.version(at("version"), p.Version)
	if p.Registered && p.Version != "" {
		v.add(at("version"), "a registered pool's version comes with its registrations (the body's \"version\"); remove this line")
	}
	d := p.Discovery
	if d == nil {
		return
	}
	dp := at("discovery")
	if p.Version != "" {
		v.add(at("version"), "a discovered pool's version is discovery.version; move it there")
	}
	v.version(append(dp, "version"), d.Version)
	name := strings.TrimSuffix(d.DNS, ".")
	switch {
	case name == "":
		v.add(append(dp, "dns"), "the name to resolve is missing; write dns: web.internal (A/AAAA, with port) or dns: _http._tcp.web.internal (SRV)")
	case strings.ContainsAny(name, " /:@") || strings.Contains(name, "..") || len(name) > 253:
		v.add(append(dp, "dns"), "%q is not a DNS name", d.DNS)
	case strings.HasPrefix(name, "_"):
		if d.Port != 0 {
			v.add(append(dp, "port"), "an SRV name (%q) gives each instance's port; remove port", d.DNS)
		}
	case d.Port < 1 || d.Port > 65535:
		v.add(append(dp, "port"), "port %d is not from 1 to 65535; A/AAAA records need the instances' port (SRV names, starting with _, carry their own)", d.Port)
	}
	if d.Resolver != "" {
		if host, port, err := net.SplitHostPort(d.Resolver); err != nil || host == "" || port == "" {
			v.add(append(dp, "resolver"), "%q is not host:port; write the DNS server as 127.0.0.1:53 (or leave it out for /etc/resolv.conf's)", d.Resolver)
		}
	}
	if d.Interval.D() < 100*time.Millisecond {
		v.add(append(dp, "interval"), "%s is under 100ms; resolve at most ten times a second (default 5s)", d.Interval.D())
	}
	if d.EmptyAfter < 1 {
		v.add(append(dp, "empty_after"), "%d; at least 1 (default %d)", d.EmptyAfter, DefaultDiscoveryEmptyAfter)
	}
	if d.MaxDropPercent < 1 || d.MaxDropPercent > 100 {
		v.add(append(dp, "max_drop_percent"), "%d is not from 1 to 100 (default %d; 100 applies any drop at once)", d.MaxDropPercent, DefaultDiscoveryMaxDropPercent)
	}
	switch d.Scheme {
	case "http", "https":
		schemes[d.Scheme] = true
	default:
		v.add(append(dp, "scheme"), "%q; use http or https", d.Scheme)
	}
}

// version checks a release's version: printable, no spaces, 64 bytes at
// most ("" is no version).
func (v *validator) version(p path, s string) {
	if err := CheckVersion(s); err != nil {
		v.add(p, "%v", err)
	}
}

// CheckVersion checks a release's version (the file's and a
// registration's): up to 64 printable bytes, no spaces; "" is none.
func CheckVersion(s string) error {
	if len(s) > 64 {
		return fmt.Errorf("version %q is longer than 64 characters", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return fmt.Errorf("version %q may only use printable characters without spaces (v2.4.0, 2026-12-05.1, a git sha)", s)
		}
	}
	return nil
}

func (v *validator) name(p path, what, s string) {
	if s == "" {
		v.add(p, "%s name is missing", what)
		return
	}
	if len(s) > 64 {
		v.add(p, "%s name %q is longer than 64 characters", what, s)
		return
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			v.add(p, "%s name %q may only use letters, digits, '.', '_' and '-' (it is a metric label and a URL segment)", what, s)
			return
		}
	}
}

// token checks a header or cookie name.
func (v *validator) token(p path, s string) {
	if s == "" {
		return
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			v.add(p, "%q is not a valid header or cookie name", s)
			return
		}
	}
}
