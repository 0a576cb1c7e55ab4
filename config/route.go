// Package config holds canaryd's configuration as plain data: the YAML types,
// their defaults (filled in one place, applyDefaults), and a strict loader that
// reports every problem with the field and line it came from.
//
// Nothing here is runtime state: the balancer, proxy and servers are built
// from a validated Config, never the other way round.
package config

import (
	"net/netip"
	"net/url"
	"regexp"

	"canaryd/upstream"
)

// Route is a set of pools that share traffic by weight.
type Route struct {
	// Name identifies the route in logs, metrics and the admin API; letters,
	// digits, '.', '_' and '-'. Required, unique.
	Name string `yaml:"name"`
	// Match selects the requests of this route.
	Match Match `yaml:"match"`
	// Pools share the route's traffic; their weights sum to 100. The last
	// pool listed owns the lowest sticky buckets (list the new release last).
	Pools []Pool `yaml:"pools"`
	// Sticky pins a user to a pool by a header or a cookie. Default off.
	Sticky Sticky `yaml:"sticky"`
	// Force lets a request name its pool (any weight, 0 included): the
	// preview path of blue/green. Default off.
	Force Force `yaml:"force"`
	// Balance picks an instance inside a pool: "round_robin" (default) or
	// "least_request" (power of two choices on in-flight requests).
	Balance string `yaml:"balance"`
	// PreserveHost forwards the client's Host header to instances. Default
	// true; false sends the instance's own host:port.
	PreserveHost *bool `yaml:"preserve_host"`
	// Health checks the route's instances. A pool may override it whole.
	// Default: no active probes, passive ejection after 5 gateway failures.
	Health Health `yaml:"health"`
	// Rollout makes canaryd move the weights of Stable and Canary itself.
	// Default: none (the file's weights rule).
	Rollout *Rollout `yaml:"rollout"`
	// Mirror copies a share of the route's requests to a pool and throws
	// its answers away (after comparing them with the real ones). Default:
	// none. A rollout with a shadow phase mirrors to its canary by itself.
	Mirror *Mirror `yaml:"mirror"`
	// Rules send the requests they match to a pool of their choice,
	// whatever its weight, tried in order before the weighted pick.
	// Default: none.
	Rules []Rule `yaml:"rules"`
	// Propagate stamps the version chosen on the request forwarded, and
	// routes a trusted peer's request that carries one to the pool of
	// that version. Default: off.
	Propagate *Propagate `yaml:"propagate"`
}

// Mirror copies requests to a pool ("shadow traffic").
type Mirror struct {
	// Pool receives the copies: a pool of the route. Required.
	Pool string `yaml:"pool"`
	// Percent of the route's (eligible) requests copied. Default 100.
	Percent Percent `yaml:"percent"`
	// Options are the shadow copies' settings, shared with rollout.shadow.
	Options ShadowOptions `yaml:",inline"`
}

// ShadowOptions are how copies are made, sent and compared; both
// routes[].mirror and rollout.shadow take them.
type ShadowOptions struct {
	// Methods copied. Default GET, HEAD and OPTIONS (safe methods: a copy
	// must not do anything twice).
	Methods []string `yaml:"methods"`
	// MaxBodyBytes: requests with a body up to this size are copied too,
	// the body buffered in memory to send it twice. Default 0: requests
	// with a body are not copied.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// Header marks each copy, so that instances can suppress side
	// effects. Default "X-Canary-Shadow" (value "1").
	Header string `yaml:"header"`
	// Queue bounds the copies waiting to be sent, per route; when it is
	// full, copies are dropped and counted, never queued without bound.
	// Default 256.
	Queue int `yaml:"queue"`
	// Concurrency bounds the copies in flight, per route. Default 16.
	Concurrency int `yaml:"concurrency"`
	// Timeout of one copy, answer included. Default 10s.
	Timeout Duration `yaml:"timeout"`
	// Compare lists what must match between an answer and its copy's:
	// "status" (the status class: 2xx, 4xx...), "headers" (but
	// IgnoreHeaders), "body" (a SHA-256 of up to CompareMaxBytes). Default
	// [status].
	Compare []string `yaml:"compare"`
	// CompareMaxBytes bounds the body bytes hashed on each side. Default
	// 1 MiB.
	CompareMaxBytes int64 `yaml:"compare_max_bytes"`
	// IgnoreHeaders are not compared. Default: Date, Server, Age,
	// Expires, Last-Modified, Etag, Set-Cookie, X-Request-Id,
	// Content-Length, Transfer-Encoding, Connection, Keep-Alive.
	IgnoreHeaders []string `yaml:"ignore_headers"`
}

// Health configures how instances are judged available.
type Health struct {
	// Active probes each instance on its own. Default off (no path).
	Active ActiveHealth `yaml:"active"`
	// Passive ejects instances that fail live traffic (outlier detection).
	Passive PassiveHealth `yaml:"passive"`
	// PanicThreshold: when fewer than this percent of a pool's instances
	// are available (but at least one is), the pool routes across all of
	// them rather than overload the few left. 0 turns it off. Default 50.
	PanicThreshold *int `yaml:"panic_threshold"`
	// SlowStart ramps an instance's share linearly over this window after
	// it becomes available (added by a reload, back from ejection or from a
	// failed probe). Default 0 (off).
	SlowStart Duration `yaml:"slow_start"`
}

// ActiveHealth probes instances periodically.
type ActiveHealth struct {
	// Path to GET on each instance; "" disables active probes. Default "".
	Path string `yaml:"path"`
	// Interval between probes of a healthy instance. Default 5s.
	Interval Duration `yaml:"interval"`
	// UnhealthyInterval between probes of an unhealthy instance, usually
	// shorter so recovery is seen quickly. Default: Interval.
	UnhealthyInterval Duration `yaml:"unhealthy_interval"`
	// Timeout of one probe. Default 2s; must be below Interval.
	Timeout Duration `yaml:"timeout"`
	// Rise consecutive passes mark an unhealthy instance healthy. Default 2.
	Rise int `yaml:"rise"`
	// Fall consecutive failures mark a healthy instance unhealthy. Default 3.
	Fall int `yaml:"fall"`
	// ExpectedStatus is the passing status range, "200-399" or "200".
	// Default "200-399".
	ExpectedStatus string `yaml:"expected_status"`
	// statusLo and statusHi are ExpectedStatus parsed (ExpectedRange).
	statusLo, statusHi int
	// Jitter spreads probes by up to this percent of the interval, so that
	// instances are not probed in lockstep. Default 10.
	Jitter *int `yaml:"jitter"`
	// GRPC probes with the standard gRPC health-checking protocol
	// (grpc.health.v1.Health/Check) instead of GET path: the instance
	// passes when it answers SERVING. Needs a pool protocol of h2c or h2.
	// Default false.
	GRPC bool `yaml:"grpc"`
	// GRPCService is the service name asked about. Default "": the
	// server as a whole.
	GRPCService string `yaml:"grpc_service"`
}

// Probing reports whether active probes run.
func (a ActiveHealth) Probing() bool { return a.Path != "" || a.GRPC }

// PassiveHealth ejects instances that fail live requests.
type PassiveHealth struct {
	// ConsecutiveFailures gateway failures in a row (connection refused or
	// reset, timeout, 502/503/504) eject an instance. 0 turns it off.
	// Default 5.
	ConsecutiveFailures *int `yaml:"consecutive_failures"`
	// Consecutive5xx answers >= 500 of any kind in a row eject an instance.
	// 0 turns it off. Default 0.
	Consecutive5xx int `yaml:"consecutive_5xx"`
	// EjectFor is the first ejection's length; each repeated ejection
	// lasts one more EjectFor (linear backoff), up to MaxEjectFor.
	// Default 30s.
	EjectFor Duration `yaml:"eject_for"`
	// MaxEjectFor caps an ejection's length. Default 5m.
	MaxEjectFor Duration `yaml:"max_eject_for"`
	// MaxEjectedPercent caps the share of a pool's instances ejected at
	// once; one instance may always be ejected. Default 50.
	MaxEjectedPercent *int `yaml:"max_ejected_percent"`
}

// Match selects requests by host and path prefix; the most specific route
// wins (an exact host beats any host, then the longest prefix).
type Match struct {
	// Host is compared case-insensitively without the port. Default "" (any).
	Host string `yaml:"host"`
	// PathPrefix is a plain string prefix of the path. Default "/".
	PathPrefix string `yaml:"path_prefix"`
}

// Pool is a group of interchangeable instances (one release).
type Pool struct {
	// Name identifies the pool (blue, green, v1...). Required, unique in the
	// route; same character set as route names.
	Name string `yaml:"name"`
	// Weight is the pool's share of the route in percent, up to two
	// decimals. Required (0 is allowed: reachable only by Force).
	Weight Percent `yaml:"weight"`
	// Instances are "host:port" or "http(s)://host:port[/base/path]". At
	// least one, no duplicates. A pool has exactly one of instances,
	// discovery and registered.
	Instances []string `yaml:"instances"`
	// Discovery finds the pool's instances in DNS, again and again.
	// Default: none (the instances are listed).
	Discovery *Discovery `yaml:"discovery"`
	// Registered: the pool's instances come and go through the
	// registration API (PUT|POST|DELETE /api/v1/routes/{route}/pools/
	// {pool}/instances), with leases. Default false.
	Registered bool `yaml:"registered"`
	// Version names the release the pool's listed instances run
	// ("v2.4.0"). With a version on the canary pool, a new release is a
	// new version; other changes of its instances keep the rollout at its
	// step. A registration's version or discovery.version takes its place
	// for dynamic pools. Default "": no version.
	Version string `yaml:"version"`
	// Health, when set, replaces the route's health block for this pool.
	// Default: the route's.
	Health *Health `yaml:"health"`
	// Protocol spoken to the instances: "http1" (HTTP/1.1, over TLS for
	// https:// instances), "h2" (HTTP/2 over TLS, negotiated by ALPN:
	// https:// instances) or "h2c" (HTTP/2 without TLS, prior knowledge:
	// http:// instances; what a gRPC server without TLS speaks). Default
	// "http1".
	Protocol upstream.Protocol `yaml:"protocol"`
	// TLS to https:// instances. Default: verified against the system's
	// roots, the instance's host as the name (upstream.insecure_skip_verify
	// aside).
	TLS *UpstreamTLS `yaml:"tls"`
	// urls are Instances parsed (URLs).
	urls []*url.URL
}

// Discovery finds a pool's instances in DNS.
type Discovery struct {
	// DNS is the name resolved: A and AAAA records (with Port), or SRV
	// records when it starts with "_" ("_http._tcp.web.internal"; port
	// and target from the records, only the lowest priority used, each
	// target once: SRV weights are not shares). Required.
	DNS string `yaml:"dns"`
	// Port of the instances found by A/AAAA. Required for them, not
	// allowed with SRV.
	Port int `yaml:"port"`
	// Resolver is the DNS server asked, "host:port". Default "": the
	// first nameserver of /etc/resolv.conf (port 53).
	Resolver string `yaml:"resolver"`
	// Interval between resolutions. Default 5s; record TTLs do not
	// shorten or lengthen it (each resolution asks the server, which
	// applies its own caching).
	Interval Duration `yaml:"interval"`
	// EmptyAfter: an answer with no instance, after a non-empty one,
	// applies only once that many resolutions in a row have said so
	// (NXDOMAIN and an empty answer alike). Default 3.
	EmptyAfter int `yaml:"empty_after"`
	// MaxDropPercent: a resolution that would remove more than this
	// share of the pool's instances at once removes that share only, and
	// the rest at the next resolutions, each again at most that share.
	// Default 50; 100 applies any drop at once.
	MaxDropPercent int `yaml:"max_drop_percent"`
	// Version is the release the name's instances run, for names that
	// are one per version ("v2.web.internal"). Default "": no version.
	Version string `yaml:"version"`
	// Scheme of the instances found: "http" or "https". Default "http"
	// ("https" when the pool has a tls block).
	Scheme string `yaml:"scheme"`
}

// Dynamic reports whether the pool's instances come from discovery or
// registrations rather than the file.
func (p Pool) Dynamic() bool { return p.Discovery != nil || p.Registered }

// UpstreamTLS is how a pool's https:// instances are verified and what
// they are shown. Its files are reloaded live, like the listener's.
type UpstreamTLS struct {
	// CAFile holds the CA(s) that sign the instances' certificates.
	// Default "": the system's roots.
	CAFile string `yaml:"ca_file"`
	// ServerName is verified in each instance's certificate and sent as
	// SNI. Default "": the instance's host.
	ServerName string `yaml:"server_name"`
	// CertFile and KeyFile are a client certificate for instances that
	// require one (mutual TLS). Default: none.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// InsecureSkipVerify accepts any certificate. Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// PoolHealth is the effective health block of a pool (defaults filled).
func (r Route) PoolHealth(p Pool) Health {
	if p.Health != nil {
		return *p.Health
	}
	return r.Health
}

// Sticky keys a user to a pool. Header and Cookie are mutually exclusive.
type Sticky struct {
	// Header is the request header that carries the user key. Default "".
	Header string `yaml:"header"`
	// Cookie is the cookie that carries the user key; with Set, the
	// cookie canaryd sets itself. Default "".
	Cookie string `yaml:"cookie"`
	// Set: canaryd gives each client without the cookie a random bucket
	// and sets the cookie to it in the answer. Default false (the
	// application sends the key).
	Set bool `yaml:"set"`
	// TTL is the cookie's Max-Age (with Set); 0 makes it a session
	// cookie. Default 24h.
	TTL *Duration `yaml:"ttl"`
	// Secure: "auto" (on answers over TLS, or behind a trusted proxy that
	// says https), "always" or "never". Default "auto".
	Secure string `yaml:"secure"`
	// SameSite: "lax", "strict" or "none". Default "lax".
	SameSite string `yaml:"same_site"`
	// Domain of the cookie. Default "": the host that answered.
	Domain string `yaml:"domain"`
	// Path of the cookie. Default "/".
	Path string `yaml:"path"`
	// SecretFile holds a key that signs the cookie's value, so that a
	// client cannot choose its bucket; every member of a cluster needs
	// the same file. Default "": unsigned (see docs/rollouts.md for why
	// that is harmless).
	SecretFile string `yaml:"secret_file"`
	// SecretDigest identifies the key's content (not the key), so that
	// the route's hash differs between cluster members whose files do:
	// their cookies would not verify on each other. Set by Validate.
	SecretDigest string `yaml:"-" json:"secret_digest,omitempty"`

	secret string // SecretFile's content, read by Validate
}

// Secret is the content of SecretFile; "" when the cookie is unsigned.
func (s *Sticky) Secret() string { return s.secret }

// Rule sends the requests it matches to a pool.
type Rule struct {
	// Name identifies the rule in the access log (routed_by: rule:NAME)
	// and in rollout.segment. Required, unique in the route.
	Name string `yaml:"name"`
	// Match: every condition given must hold. At least one is required.
	Match RuleMatch `yaml:"match"`
	// Pool the matching requests go to, weight 0 included. Required,
	// but for the rule a rollout uses as its segment (the rollout routes
	// that one).
	Pool string `yaml:"pool"`
}

// RuleMatch are a rule's conditions.
type RuleMatch struct {
	// Header, Cookie and Query map a name to a condition on its (first)
	// value; a request without the name does not match.
	Header map[string]*StringMatch `yaml:"header"`
	Cookie map[string]*StringMatch `yaml:"cookie"`
	Query  map[string]*StringMatch `yaml:"query"`
	// Source lists the client addresses (CIDRs or single IPs) that match:
	// the peer, or behind trusted_proxies the client they forwarded for.
	Source []string `yaml:"source"`

	source []netip.Prefix
}

// Sources is Source parsed.
func (m *RuleMatch) Sources() []netip.Prefix { return m.source }

// StringMatch is one condition: exactly one of its keys.
type StringMatch struct {
	// Exact value.
	Exact *string `yaml:"exact"`
	// Prefix of the value.
	Prefix *string `yaml:"prefix"`
	// Regex (RE2 syntax) the whole value must match; at most
	// MaxRegexLength characters.
	Regex string `yaml:"regex"`
	// In: any of these values, exactly.
	In []string `yaml:"in"`

	re *regexp.Regexp
}

// Compiled is Regex compiled (anchored at both ends); nil without one.
func (m *StringMatch) Compiled() *regexp.Regexp { return m.re }

// MaxRegexLength bounds a rule's regex, and MaxRegexProgram the size of
// its compiled program, so that matching stays cheap however it is
// written (RE2 runs in time linear in the value already).
const (
	MaxRegexLength  = 1024
	MaxRegexProgram = 5000
	// MaxRules bounds a route's rules.
	MaxRules = 64
)

// Propagate carries the version chosen to the next hop.
type Propagate struct {
	// Header that carries the version: the pool's version, or its name
	// when it has none. Required.
	Header string `yaml:"header"`
}

// Force names a pool directly. Both may be set; the header is read first.
// Left open (no AllowFrom, no SecretFile), any client can reach any pool,
// a 0% canary included.
type Force struct {
	// Header carries a pool name, e.g. "X-Canary-Pool: green". Default "".
	Header string `yaml:"header"`
	// Cookie carries a pool name. Default "".
	Cookie string `yaml:"cookie"`
	// AllowFrom lists the peers (CIDRs or single IPs, or the word
	// "trusted_proxies" for that list) whose requests may force a pool; the
	// peer is the connection's address. Others' force headers and cookies
	// are ignored: their requests are routed by weight. Default: any peer.
	AllowFrom []string `yaml:"allow_from"`
	// SecretFile holds a shared secret (trimmed of surrounding space); when
	// set, a request forces a pool only if it also carries the secret in
	// SecretHeader. The header is removed before the request is forwarded.
	// Default "" (no secret).
	SecretFile string `yaml:"secret_file"`
	// SecretHeader carries the secret. Default "X-Canary-Secret".
	SecretHeader string `yaml:"secret_header"`

	// Parsed by Validate: AllowFrom as prefixes, and the secret.
	allow  []netip.Prefix
	secret string
}

// Allowed is AllowFrom parsed ("trusted_proxies" expanded); nil when any
// peer may force.
func (f *Force) Allowed() []netip.Prefix { return f.allow }

// Secret is the content of SecretFile; "" when none is required.
func (f *Force) Secret() string { return f.secret }

// Balance policies.
const (
	BalanceRoundRobin   = "round_robin"
	BalanceLeastRequest = "least_request"
)

// PreservesHost reports the effective PreserveHost (default true).
func (r Route) PreservesHost() bool { return r.PreserveHost == nil || *r.PreserveHost }
