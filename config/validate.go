package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"canaryd/grpccode"
	"canaryd/tlsfiles"

	"go.yaml.in/yaml/v3"
)

// Defaults, in one place. docs/config.md repeats them; keep both in step.
const (
	DefaultListen                 = ":8080"
	DefaultAdminListen            = "127.0.0.1:9901"
	DefaultReadHeaderTimeout      = 10 * time.Second
	DefaultIdleTimeout            = 120 * time.Second
	DefaultMaxHeaderBytes         = 64 << 10
	DefaultDrainTimeout           = 30 * time.Second
	DefaultDialTimeout            = 2 * time.Second
	DefaultResponseHeaderTimeout  = 30 * time.Second
	DefaultMaxIdleConnsPerHost    = 256
	DefaultIdleConnTimeout        = 90 * time.Second
	DefaultMaxResponseHeaderBytes = 64 << 10
	// MaxResponseHeaderBytesLimit is the largest max_response_header_bytes:
	// a head is held in memory whole while it is read.
	MaxResponseHeaderBytesLimit = 1 << 20
	DefaultReloadDebounce       = 100 * time.Millisecond
	DefaultReloadPollInterval   = 30 * time.Second
	DefaultProbeInterval        = 5 * time.Second
	DefaultProbeTimeout         = 2 * time.Second
	DefaultRise                 = 2
	DefaultFall                 = 3
	DefaultExpectedStatus       = "200-399"
	DefaultJitterPercent        = 10
	DefaultConsecutiveFailures  = 5
	DefaultEjectFor             = 30 * time.Second
	DefaultMaxEjectFor          = 5 * time.Minute
	DefaultMaxEjectedPercent    = 50
	DefaultPanicThreshold       = 50
	DefaultTripwireWindow       = 10 * time.Second
	DefaultForceSecretHeader    = "X-Canary-Secret"
	DefaultShadowHeader         = "X-Canary-Shadow"
	// TripwireResolution is how often the tripwire reads the counters;
	// MinTripwireWindow is the shortest window it can honour.
	TripwireResolution            = time.Second
	MinTripwireWindow             = time.Second
	DefaultH2MaxConcurrentStreams = 100
	DefaultH2StreamBuffer         = 256 << 10
	DefaultH2ConnBuffer           = 1 << 20
	DefaultH2PingTimeout          = 15 * time.Second
	DefaultH2WriteByteTimeout     = 30 * time.Second
	DefaultTLSMinVersion          = "1.2"
	// AdminOff disables the admin listener.
	AdminOff = "off"
	// MaxPools bounds pools per route (the schedule stores a byte per slot).
	MaxPools = 255
)

func (c *Config) applyDefaults() {
	setStr(&c.Listen, DefaultListen)
	setStr(&c.Admin.Listen, DefaultAdminListen)
	setStr(&c.StateDir, "./state")
	setDur(&c.Server.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDur(&c.Server.IdleTimeout, DefaultIdleTimeout)
	setInt(&c.Server.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDur(&c.Server.DrainTimeout, DefaultDrainTimeout)
	setDur(&c.Upstream.DialTimeout, DefaultDialTimeout)
	setDur(&c.Upstream.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	setInt(&c.Upstream.MaxIdleConnsPerHost, DefaultMaxIdleConnsPerHost)
	setDur(&c.Upstream.IdleConnTimeout, DefaultIdleConnTimeout)
	if c.Upstream.MaxResponseHeaderBytes == 0 {
		c.Upstream.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
	}
	setBoolPtr(&c.Upstream.FastPath, true)
	h2 := &c.Server.HTTP2
	setInt(&h2.MaxConcurrentStreams, DefaultH2MaxConcurrentStreams)
	setInt(&h2.MaxReceiveBufferPerStream, DefaultH2StreamBuffer)
	setInt(&h2.MaxReceiveBufferPerConnection, DefaultH2ConnBuffer)
	setDur(&h2.PingTimeout, DefaultH2PingTimeout)
	setDur(&h2.WriteByteTimeout, DefaultH2WriteByteTimeout)
	setStr(&c.TLS.MinVersion, DefaultTLSMinVersion)
	if c.TLS.ClientCAFile != "" {
		setStr(&c.TLS.ClientAuth, ClientAuthRequire)
	}
	if len(c.GRPC.ErrorCodes) == 0 {
		c.GRPC.ErrorCodes = []string{"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
	}
	setInt(&c.AccessLog.Sample, 1)
	setDur(&c.Reload.Debounce, DefaultReloadDebounce)
	setDur(&c.Reload.PollInterval, DefaultReloadPollInterval)
	if c.Cluster != nil {
		c.Cluster.applyDefaults()
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		setStr(&r.Match.PathPrefix, "/")
		setStr(&r.Balance, BalanceRoundRobin)
		setStr(&r.Force.SecretHeader, DefaultForceSecretHeader)
		if m := r.Mirror; m != nil {
			if m.Percent == 0 {
				m.Percent = Full
			}
			m.Shadow.applyDefaults()
		}
		r.Health.applyDefaults()
		if r.Rollout != nil {
			r.Rollout.applyDefaults()
		}
		for j := range r.Pools {
			setStr(&r.Pools[j].Protocol, ProtocolHTTP1)
			if h := r.Pools[j].Health; h != nil {
				h.applyDefaults()
			}
		}
	}
}

func (o *MirrorOptions) applyDefaults() {
	if len(o.Methods) == 0 {
		o.Methods = []string{"GET", "HEAD", "OPTIONS"}
	}
	setStr(&o.Header, DefaultShadowHeader)
	setInt(&o.Queue, 256)
	setInt(&o.Concurrency, 16)
	setDur(&o.Timeout, 10*time.Second)
	if len(o.Compare) == 0 {
		o.Compare = []string{CompareStatus}
	}
	if o.CompareMaxBytes == 0 {
		o.CompareMaxBytes = 1 << 20
	}
	if o.IgnoreHeaders == nil {
		o.IgnoreHeaders = []string{"Date", "Server", "Age", "Expires", "Last-Modified", "Etag", "Set-Cookie", "X-Request-Id",
			"Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive"}
	}
}

func (h *Health) applyDefaults() {
	a := &h.Active
	setDur(&a.Interval, DefaultProbeInterval)
	setDur(&a.UnhealthyInterval, a.Interval.D())
	setDur(&a.Timeout, DefaultProbeTimeout)
	setInt(&a.Rise, DefaultRise)
	setInt(&a.Fall, DefaultFall)
	setStr(&a.ExpectedStatus, DefaultExpectedStatus)
	setIntPtr(&a.Jitter, DefaultJitterPercent)
	p := &h.Passive
	setIntPtr(&p.ConsecutiveFailures, DefaultConsecutiveFailures)
	setDur(&p.EjectFor, DefaultEjectFor)
	setDur(&p.MaxEjectFor, DefaultMaxEjectFor)
	setIntPtr(&p.MaxEjectedPercent, DefaultMaxEjectedPercent)
	setIntPtr(&h.PanicThreshold, DefaultPanicThreshold)
}

func (ro *Rollout) applyDefaults() {
	setStr(&ro.Strategy, StrategyCanary)
	fromStep := ro.Step != 0 || ro.Strategy == StrategyLinear
	if ro.Step == 0 {
		ro.Step = 1000
	}
	if ro.Max == 0 {
		ro.Max = Full
	}
	if len(ro.Steps) == 0 {
		switch {
		case ro.Strategy == StrategyBlueGreen:
			ro.Steps = []Percent{0, Full}
		case fromStep && ro.Step > 0:
			for w := ro.Step; w < ro.Max && w < Full; w += ro.Step {
				ro.Steps = append(ro.Steps, w)
			}
			if ro.Max < Full {
				ro.Steps = append(ro.Steps, ro.Max)
			}
			ro.Steps = append(ro.Steps, Full)
		default:
			ro.Steps = []Percent{100, 500, 2500, 5000, Full}
		}
	}
	setDur(&ro.Interval, 30*time.Second)
	setInt(&ro.MinRequests, 200)
	setInt(&ro.FailureLimit, 2)
	setInt(&ro.MaxInconclusive, 10)
	setInt(&ro.MaxGathering, 200)
	if ro.Analysis.Confidence == 0 {
		ro.Analysis.Confidence = 0.95
	}
	setDur(&ro.Tripwire.Window, DefaultTripwireWindow)
	setInt(&ro.Tripwire.MinRequests, 20)
	if ro.Tripwire.MaxErrorRate == 0 {
		ro.Tripwire.MaxErrorRate = 0.5
	}
	if c := ro.Analysis.CompareToStable; c != nil {
		if c.Confidence == 0 {
			c.Confidence = 0.99
		}
		if c.MaxRatio == 0 {
			c.MaxRatio = 1.5
		}
		if c.MinDifference == nil {
			d := 0.005
			c.MinDifference = &d
		}
		setDur(&c.MinLatencyDifference, 10*time.Millisecond)
	}
	if p := ro.Analysis.Prometheus; p != nil {
		setDur(&p.Timeout, 5*time.Second)
	}
	setDur(&ro.Webhook.Timeout, 5*time.Second)
	setIntPtr(&ro.Webhook.Retries, 3)
	if sh := ro.Shadow; sh != nil {
		if sh.Percent == 0 {
			sh.Percent = 1000
		}
		setInt(&sh.MinRequests, ro.MinRequests)
		if sh.MaxMismatchRate == nil {
			d := 0.05
			sh.MaxMismatchRate = &d
		}
		sh.Options.applyDefaults()
	}
}

func setIntPtr(p **int, d int) {
	if *p == nil {
		*p = &d
	}
}

func setBoolPtr(p **bool, d bool) {
	if *p == nil {
		*p = &d
	}
}

func setStr(p *string, d string) {
	if *p == "" {
		*p = d
	}
}

func setDur(p *Duration, d time.Duration) {
	if *p == 0 {
		*p = Duration(d)
	}
}

func setInt(p *int, d int) {
	if *p == 0 {
		*p = d
	}
}

// RestartNeeded lists the settings that differ between a running config and
// a new one and that only take effect on restart: listeners, timeouts,
// upstream tuning, trusted proxies, reload tuning. Routes reload live.
func RestartNeeded(running, next *Config) []string {
	var diffs []string
	check := func(name string, a, b any) {
		diffs = append(diffs, fieldDiffs(name, reflect.ValueOf(a), reflect.ValueOf(b))...)
	}
	check("listen", running.Listen, next.Listen)
	check("admin", running.Admin, next.Admin)
	check("server", running.Server, next.Server)
	check("upstream", running.Upstream, next.Upstream)
	check("tls", running.TLS, next.TLS)
	check("grpc", running.GRPC, next.GRPC)
	check("trusted_proxies", running.TrustedProxies, next.TrustedProxies)
	check("reload", running.Reload, next.Reload)
	check("access_log", running.AccessLog, next.AccessLog)
	check("state_dir", running.StateDir, next.StateDir)
	check("cluster", running.Cluster, next.Cluster)
	return diffs
}

// fieldDiffs names each setting that differs between a and b by its YAML
// path, with both values ("upstream.fast_path (true → false)"), descending
// into blocks and through pointers.
func fieldDiffs(name string, a, b reflect.Value) []string {
	for a.Kind() == reflect.Pointer && b.Kind() == reflect.Pointer && !a.IsNil() && !b.IsNil() {
		a, b = a.Elem(), b.Elem()
	}
	if a.Kind() == reflect.Struct && a.Type() == b.Type() {
		var out []string
		for i := 0; i < a.NumField(); i++ {
			f := a.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" {
				tag = f.Name
			}
			out = append(out, fieldDiffs(name+"."+tag, a.Field(i), b.Field(i))...)
		}
		return out
	}
	if reflect.DeepEqual(a.Interface(), b.Interface()) {
		return nil
	}
	return []string{fmt.Sprintf("%s (%v → %v)", name, a.Interface(), b.Interface())}
}

// validator walks a defaulted Config next to its YAML tree so that every
// problem can name the line it comes from.
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
	if len(c.Routes) == 0 {
		v.add(path{"routes"}, "no routes; add at least one route with pools")
	}
	routeNames := map[string]int{}
	matches := map[string]string{}
	for i := range c.Routes {
		r := &c.Routes[i]
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

func (v *validator) mirrorOptions(p path, o *MirrorOptions) {
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
	if h.SendPingTimeout.D() > 0 && h.SendPingTimeout.D() < time.Second {
		v.add(at("send_ping_timeout"), "%v is under 1s; PING less often (or 0 for never)", h.SendPingTimeout)
	}
}

// pool checks a pool's protocol against its instances' scheme, and
// loads its TLS files.
func (v *validator) pool(pp path, p *Pool, schemes map[string]bool) {
	at := func(k ...any) path { return append(append(path{}, pp...), k...) }
	switch p.Protocol {
	case ProtocolHTTP1:
	case ProtocolH2:
		if schemes["http"] {
			v.add(at("protocol"), "h2 is HTTP/2 over TLS, for https:// instances; use h2c for plain http:// instances")
		}
	case ProtocolH2C:
		if schemes["https"] {
			v.add(at("protocol"), "h2c is HTTP/2 without TLS, for http:// instances; use h2 for https:// instances")
		}
	default:
		v.add(at("protocol"), "%q is not a protocol; use %s, %s or %s", p.Protocol, ProtocolHTTP1, ProtocolH2, ProtocolH2C)
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
	if h := p.Health; h != nil && h.Active.GRPC && p.Protocol == ProtocolHTTP1 {
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
	if r.Sticky.Header != "" && r.Sticky.Cookie != "" {
		v.add(append(rp, "sticky"), "set header or cookie, not both")
	}
	v.token(append(rp, "sticky", "header"), r.Sticky.Header)
	v.token(append(rp, "sticky", "cookie"), r.Sticky.Cookie)
	v.token(append(rp, "force", "header"), r.Force.Header)
	v.token(append(rp, "force", "cookie"), r.Force.Cookie)
	v.force(append(rp, "force"), &r.Force)
	if m := r.Mirror; m != nil {
		mp := append(append(path{}, rp...), "mirror")
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
		v.mirrorOptions(mp, &m.Shadow)
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
		if len(p.Instances) == 0 {
			v.add(append(pp, "instances"), "no instances; list host:port or http(s)://host:port entries")
		}
		seen := map[string]int{}
		schemes := map[string]bool{}
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
		if p.Health == nil && r.Health.Active.GRPC && p.Protocol == ProtocolHTTP1 {
			v.add(append(rp, "health", "active", "grpc"), "gRPC health probes need HTTP/2, and pool %q speaks http1; set its protocol to h2c (or h2)", p.Name)
		}
	}
	if sumKnown && sum != Full.BasisPoints() {
		v.add(append(rp, "pools"), "weights of route %q sum to %s%%, not 100; adjust them so they add up to exactly 100", r.Name, Percent(sum))
	}
}

func (v *validator) rollout(p path, r *Route) {
	ro := r.Rollout
	at := func(k ...any) path { return append(append(path{}, p...), k...) }
	switch ro.Strategy {
	case StrategyCanary, StrategyLinear, StrategyBlueGreen:
	default:
		v.add(at("strategy"), "%q is not a strategy; use canary, linear or blue_green", ro.Strategy)
	}
	pools := map[string]bool{}
	for _, pl := range r.Pools {
		pools[pl.Name] = true
	}
	for _, k := range []struct{ key, name string }{{"stable", ro.Stable}, {"canary", ro.Canary}} {
		if k.name == "" {
			v.add(at(k.key), "missing; name the route's %s pool", k.key)
		} else if !pools[k.name] {
			v.add(at(k.key), "%q is not a pool of route %q", k.name, r.Name)
		}
	}
	if ro.Stable != "" && ro.Stable == ro.Canary {
		v.add(at("canary"), "stable and canary are both %q", ro.Stable)
	}
	for _, pl := range r.Pools {
		if pl.Name != ro.Stable && pl.Name != ro.Canary && pl.Weight != 0 {
			v.add(at("stable"), "pool %q has weight %s; in a route with a rollout, pools other than stable and canary must have weight 0", pl.Name, pl.Weight)
		}
	}
	prev := Percent(-1)
	for i, w := range ro.Steps {
		if w <= prev {
			v.add(at("steps", i), "%s%% does not rise above the step before it", w)
		}
		prev = w
	}
	if n := len(ro.Steps); n > 0 && ro.Steps[n-1] != Full {
		v.add(at("steps"), "the last step is %s%%; it must be 100", ro.Steps[n-1])
	}
	if ro.Strategy == StrategyBlueGreen && (len(ro.Steps) != 2 || ro.Steps[0] != 0) {
		v.add(at("steps"), "blue_green has no steps of its own (preview at 0, then 100); remove steps")
	}
	if ro.Step <= 0 {
		v.add(at("step"), "must be above 0")
	}
	if ro.Interval.D() < 100*time.Millisecond {
		v.add(at("interval"), "%v is shorter than 100ms", ro.Interval)
	}
	if ro.MinRequests < 1 {
		v.add(at("min_requests"), "must be at least 1: no step is judged on no traffic")
	}
	if ro.FailureLimit < 1 {
		v.add(at("failure_limit"), "must be at least 1")
	}
	if ro.MaxInconclusive < 1 {
		v.add(at("max_inconclusive"), "must be at least 1")
	}
	if t := ro.Tripwire; t.MaxErrorRate <= 0 || t.MaxErrorRate > 1 || t.MinRequests < 1 {
		v.add(at("tripwire"), "max_error_rate must be in (0, 1] and min_requests at least 1")
	}
	if t := ro.Tripwire; !t.Disabled && t.Window.D() < MinTripwireWindow {
		v.add(at("tripwire", "window"), "%v is shorter than %v: the tripwire reads the counters every %v and needs two readings a window apart; use %v or more (default %v), or set tripwire.disabled: true",
			t.Window, MinTripwireWindow, TripwireResolution, MinTripwireWindow, DefaultTripwireWindow)
	}
	if ro.MaxGathering < 1 {
		v.add(at("max_gathering"), "must be at least 1")
	}
	if sh := ro.Shadow; sh != nil {
		if sh.Percent < 1 || sh.Percent > Full {
			v.add(at("shadow", "percent"), "must be from 0.01 to 100")
		}
		if sh.MinRequests < 1 {
			v.add(at("shadow", "min_requests"), "must be at least 1")
		}
		if r := *sh.MaxMismatchRate; r < 0 || r > 1 {
			v.add(at("shadow", "max_mismatch_rate"), "%v is not a rate from 0 to 1", r)
		}
		v.mirrorOptions(at("shadow"), &sh.Options)
	}
	if c := ro.Analysis.Confidence; c < 0.5 || c >= 1 {
		v.add(at("analysis", "confidence"), "%v is not in [0.5, 1)", c)
	}
	a := ro.Analysis
	if a.MaxErrorRate != nil && (*a.MaxErrorRate < 0 || *a.MaxErrorRate > 1) {
		v.add(at("analysis", "max_error_rate"), "%v is not a rate from 0 to 1", *a.MaxErrorRate)
	}
	if c := a.CompareToStable; c != nil {
		if c.Confidence < 0.5 || c.Confidence >= 1 {
			v.add(at("analysis", "compare_to_stable", "confidence"), "%v is not in [0.5, 1)", c.Confidence)
		}
		if c.MaxRatio < 1 {
			v.add(at("analysis", "compare_to_stable", "max_ratio"), "%v is below 1", c.MaxRatio)
		}
		if *c.MinDifference < 0 || *c.MinDifference > 1 {
			v.add(at("analysis", "compare_to_stable", "min_difference"), "%v is not a rate from 0 to 1", *c.MinDifference)
		}
	}
	if pa := a.Prometheus; pa != nil {
		if u, err := url.Parse(pa.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add(at("analysis", "prometheus", "url"), "%q is not an http(s) URL", pa.URL)
		}
		if len(pa.Checks) == 0 {
			v.add(at("analysis", "prometheus", "checks"), "no checks; list at least one query")
		}
		names := map[string]bool{}
		for i, c := range pa.Checks {
			cp := at("analysis", "prometheus", "checks", i)
			if c.Name == "" || names[c.Name] {
				v.add(append(cp, "name"), "each check needs a unique name")
			}
			names[c.Name] = true
			if strings.TrimSpace(c.Query) == "" {
				v.add(append(cp, "query"), "empty query")
			}
			if c.Min == nil && c.Max == nil {
				v.add(cp, "set min, max or both")
			}
		}
	}
	if ro.Webhook.URL != "" {
		if u, err := url.Parse(ro.Webhook.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add(at("webhook", "url"), "%q is not an http(s) URL", ro.Webhook.URL)
		}
	}
	if *ro.Webhook.Retries < 0 || *ro.Webhook.Retries > 10 {
		v.add(at("webhook", "retries"), "%d is not from 0 to 10", *ro.Webhook.Retries)
	}
}

func (v *validator) health(hp path, h *Health) {
	a := h.Active
	ap := append(append(path{}, hp...), "active")
	if a.GRPC && a.Path != "" {
		v.add(append(ap, "path"), "a gRPC probe asks grpc.health.v1.Health/Check, not a path; remove path (or grpc)")
	}
	if a.GRPCService != "" && !a.GRPC {
		v.add(append(ap, "grpc_service"), "is for gRPC probes; set grpc: true too")
	}
	if a.Probing() {
		if a.Path != "" && !strings.HasPrefix(a.Path, "/") {
			v.add(append(ap, "path"), "%q must start with /", a.Path)
		}
		if a.Timeout.D() >= a.Interval.D() || a.Timeout.D() > a.UnhealthyInterval.D() {
			v.add(append(ap, "timeout"), "%v must be shorter than interval (%v) and not longer than unhealthy_interval (%v)", a.Timeout, a.Interval, a.UnhealthyInterval)
		}
		if a.Interval.D() < 100*time.Millisecond || a.UnhealthyInterval.D() < 100*time.Millisecond {
			v.add(append(ap, "interval"), "probe intervals must be at least 100ms")
		}
	}
	if a.Rise < 1 || a.Rise > 100 {
		v.add(append(ap, "rise"), "%d is not from 1 to 100", a.Rise)
	}
	if a.Fall < 1 || a.Fall > 100 {
		v.add(append(ap, "fall"), "%d is not from 1 to 100", a.Fall)
	}
	if lo, hi, err := ParseStatusRange(a.ExpectedStatus); err != nil {
		v.add(append(ap, "expected_status"), "%v", err)
	} else {
		h.Active.statusLo, h.Active.statusHi = lo, hi
	}
	if *a.Jitter < 0 || *a.Jitter > 50 {
		v.add(append(ap, "jitter"), "%d%% is not from 0 to 50", *a.Jitter)
	}
	pp := append(append(path{}, hp...), "passive")
	if *h.Passive.ConsecutiveFailures < 0 {
		v.add(append(pp, "consecutive_failures"), "must be 0 (off) or more")
	}
	if h.Passive.Consecutive5xx < 0 {
		v.add(append(pp, "consecutive_5xx"), "must be 0 (off) or more")
	}
	if h.Passive.MaxEjectFor.D() < h.Passive.EjectFor.D() {
		v.add(append(pp, "max_eject_for"), "%v is shorter than eject_for (%v)", h.Passive.MaxEjectFor, h.Passive.EjectFor)
	}
	if m := *h.Passive.MaxEjectedPercent; m < 0 || m > 100 {
		v.add(append(pp, "max_ejected_percent"), "%d is not from 0 to 100", m)
	}
	if t := *h.PanicThreshold; t < 0 || t > 100 {
		v.add(append(hp, "panic_threshold"), "%d is not from 0 (off) to 100", t)
	}
}

// ParseStatusRange reads "200" or "200-399".
func ParseStatusRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi = lo
	var err2 error
	if isRange {
		hi, err2 = strconv.Atoi(strings.TrimSpace(b))
	}
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("%q is not a status or range such as 200 or 200-399", s)
	}
	return lo, hi, nil
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

// ParseInstance reads "host:port" or "http(s)://host:port[/path]" into the
// URL canaryd forwards to. It is also the instance's canonical identity.
func ParseInstance(s string) (*url.URL, error) {
	if s == "" {
		return nil, fmt.Errorf("instance is empty")
	}
	raw := s
	if !strings.Contains(s, "://") {
		raw = "http://" + s
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("instance %q: %v", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("instance %q: scheme %q is not http or https", s, u.Scheme)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("instance %q: only scheme, host, port and a base path are allowed", s)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("instance %q: needs host:port (e.g. 127.0.0.1:9001)", s)
	}
	if host == "" {
		return nil, fmt.Errorf("instance %q: host is missing", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("instance %q: port %q is not a number from 1 to 65535", s, port)
	}
	u.Host = strings.ToLower(u.Host)
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// ParseTrusted reads a CIDR ("10.0.0.0/8") or a single IP ("127.0.0.1").
func ParseTrusted(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
