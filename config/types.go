// Package config holds canaryd's configuration as plain data: the YAML types,
// their defaults (filled in one place, applyDefaults), and a strict loader that
// reports every problem with the field and line it came from.
//
// Nothing here is runtime state: the balancer, proxy and servers are built
// from a validated Config, never the other way round.
package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"canaryd/grpccode"

	"go.yaml.in/yaml/v3"
)

// Config is the whole file.
type Config struct {
	// Listen is the proxy's address. Default ":8080".
	Listen string `yaml:"listen"`
	// Admin is the admin listener. Default bind "127.0.0.1:9901".
	Admin Admin `yaml:"admin"`
	// StateDir keeps rollout state across restarts. Default "./state".
	StateDir string `yaml:"state_dir"`
	// Server holds the proxy listener's timeouts and limits.
	Server Server `yaml:"server"`
	// TLS makes the proxy listener serve HTTPS (and HTTP/2). Default: plain
	// HTTP.
	TLS TLS `yaml:"tls"`
	// Upstream tunes the connections canaryd opens to instances.
	Upstream Upstream `yaml:"upstream"`
	// GRPC says which gRPC answers count as errors.
	GRPC GRPC `yaml:"grpc"`
	// TrustedProxies lists peers (CIDRs or single IPs) whose Forwarded and
	// X-Forwarded-* headers are kept and extended. Default empty: every peer's
	// forwarding headers are replaced, so a client cannot spoof its address.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Reload tunes how edits of this file are picked up.
	Reload Reload `yaml:"reload"`
	// AccessLog writes one JSON line per request. Default off.
	AccessLog AccessLog `yaml:"access_log"`
	// trusted is TrustedProxies parsed (Trusted).
	trusted []netip.Prefix
	// Cluster makes replicas act as one router on etcd (docs/cluster.md).
	// Default none: a single process that needs no etcd.
	Cluster *Cluster `yaml:"cluster"`
	// Routes are matched by host and longest path prefix. At least one.
	// Routes are what a live reload changes; every other section needs a
	// restart (see docs/config.md).
	Routes []Route `yaml:"routes"`
}

// AccessLog is the per-request log.
type AccessLog struct {
	// Enabled turns it on. Default false: no line per request at all.
	Enabled bool `yaml:"enabled"`
	// Sample logs one request in Sample (1 logs every request); answers >=
	// 500 are always logged. Default 1.
	Sample int `yaml:"sample"`
}

// Reload tunes live reloading of the config file.
type Reload struct {
	// Debounce waits this long after the last file event before reading, so
	// an editor's burst of writes is read once. Default 100ms.
	Debounce Duration `yaml:"debounce"`
	// PollInterval re-reads the file this often even without events, for
	// mounts that send none; "off" is not a value, use a long interval.
	// Default 30s.
	PollInterval Duration `yaml:"poll_interval"`
}

// Admin is the admin listener.
type Admin struct {
	// Listen is the admin address; default "127.0.0.1:9901". Empty string
	// after defaults is impossible; use "off" to disable the admin listener.
	Listen string `yaml:"listen"`
	// TokenFile holds the bearer token that admin mutations require. Default
	// "" (no token; keep the admin listener on loopback then).
	TokenFile string `yaml:"token_file"`
	// AllowedHosts are host names (besides IP literals and localhost) that
	// the API and dashboard answer to; any other Host header gets 403, which
	// defeats DNS rebinding. Default none.
	AllowedHosts []string `yaml:"allowed_hosts"`
}

// Server holds the proxy listener's timeouts and limits. There is on purpose
// no absolute write timeout: it would cut WebSockets and event streams.
type Server struct {
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes idle keep-alive client connections. Default 120s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes caps request header size; larger requests get 431.
	// Default 65536.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// DrainTimeout is how long a shutdown waits for in-flight requests
	// before closing what is left. Default 30s.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// MaxRequestBodyBytes caps request bodies (413 above it); they are
	// streamed, never buffered. Default 0: no cap.
	MaxRequestBodyBytes int64 `yaml:"max_request_body_bytes"`
	// H2C serves unencrypted HTTP/2 with prior knowledge (clients that
	// start with the HTTP/2 preface, as gRPC clients without TLS do) on a
	// plain listen address, beside HTTP/1.1. Default false.
	H2C bool `yaml:"h2c"`
	// ProxyProtocol reads a PROXY protocol header (v1 or v2) from peers in
	// trusted_proxies, so the client's address is the one the L4 balancer
	// saw; a header from any other peer closes the connection. Default
	// false.
	ProxyProtocol bool `yaml:"proxy_protocol"`
	// HTTP2 bounds what one HTTP/2 client connection may hold.
	HTTP2 HTTP2 `yaml:"http2"`
}

// HTTP2 bounds HTTP/2 client connections (TLS with ALPN h2, or h2c). The
// request header limit is server.max_header_bytes, and idle connections
// close after server.idle_timeout, as for HTTP/1.1.
type HTTP2 struct {
	// MaxConcurrentStreams a client may have open on one connection;
	// streams beyond it are refused (REFUSED_STREAM), and canaryd runs at
	// most this many handlers per connection, however fast a client opens
	// and resets streams. Default 100 (Envoy's and nginx's order).
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
	// MaxReceiveBufferPerStream is the flow-control window of one stream
	// (request body bytes buffered before the client must wait). Default
	// 262144 (256 KiB).
	MaxReceiveBufferPerStream int `yaml:"max_receive_buffer_per_stream"`
	// MaxReceiveBufferPerConnection is the window of the whole connection.
	// Default 1048576 (1 MiB).
	MaxReceiveBufferPerConnection int `yaml:"max_receive_buffer_per_connection"`
	// PingTimeout closes a connection whose client does not answer a
	// health PING in time; PINGs go out after SendPingTimeout without a
	// frame. Defaults 15s and 0 (no PINGs: idle_timeout rules).
	PingTimeout     Duration `yaml:"ping_timeout"`
	SendPingTimeout Duration `yaml:"send_ping_timeout"`
	// WriteByteTimeout closes a connection that accepts no byte for this
	// long while canaryd has data for it (a client that stops reading).
	// Default 30s.
	WriteByteTimeout Duration `yaml:"write_byte_timeout"`
}

// TLS is the proxy listener's TLS. Certificate, key and CA files are
// reloaded live when they change (rename, symlink swap, in-place write),
// and a broken or mismatched new pair is refused while the old one serves;
// the other keys need a restart.
type TLS struct {
	// CertFile and KeyFile are the default certificate (PEM; the chain
	// after the leaf) and its key. Setting them turns TLS on.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Certificates adds certificates chosen by the client's server name
	// (SNI) against each one's DNS names, wildcards included; the first
	// certificate (cert_file, else the first here) is served when none
	// matches. Default none.
	Certificates []CertPair `yaml:"certificates"`
	// MinVersion is the lowest TLS version: "1.2" or "1.3". Default "1.2".
	MinVersion string `yaml:"min_version"`
	// ClientCAFile asks clients for a certificate signed by one of its CAs
	// (mutual TLS). Default "": none asked for.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth with a client_ca_file: "require" refuses a client without
	// a valid certificate, "verify_if_given" checks one only if sent.
	// Default "require".
	ClientAuth string `yaml:"client_auth"`
	// RedirectHTTP is an address (":80") where plain HTTP is answered
	// with a permanent redirect (308) to the same URL over https. Default
	// "": none.
	RedirectHTTP string `yaml:"redirect_http"`
}

// CertPair is a certificate file and its key file.
type CertPair struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Client authentication modes of tls.client_auth.
const (
	ClientAuthRequire       = "require"
	ClientAuthVerifyIfGiven = "verify_if_given"
)

// Trusted is trusted_proxies parsed.
func (c *Config) Trusted() []netip.Prefix { return c.trusted }

// URLs are the pool's instances parsed, in their order (canonical: see
// ParseInstance).
func (p Pool) URLs() []*url.URL { return p.urls }

// SetInstances replaces a pool's instances (the demo moves its ports),
// keeping URLs in step.
func (p *Pool) SetInstances(instances []string) error {
	urls := make([]*url.URL, 0, len(instances))
	for _, in := range instances {
		u, err := ParseInstance(in)
		if err != nil {
			return fmt.Errorf("pool %q: %w", p.Name, err)
		}
		urls = append(urls, u)
	}
	p.Instances, p.urls = instances, urls
	return nil
}

// ExpectedRange is expected_status parsed: the lowest and highest passing
// status.
func (a ActiveHealth) ExpectedRange() (lo, hi int) { return a.statusLo, a.statusHi }

// Enabled reports whether the listener serves TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" || len(t.Certificates) > 0 }

// Pairs lists every certificate, the default first.
func (t TLS) Pairs() []CertPair {
	var ps []CertPair
	if t.CertFile != "" {
		ps = append(ps, CertPair{t.CertFile, t.KeyFile})
	}
	return append(ps, t.Certificates...)
}

// GRPC judges gRPC answers (content type application/grpc): their
// grpc-status, in the trailers or a trailers-only answer, decides whether
// the call failed, whatever its HTTP status (which is 200).
type GRPC struct {
	// ErrorCodes count as errors in the metrics, passive health, the
	// in-process windows and so in rollouts: names (UNAVAILABLE) or
	// numbers. Default UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
	// INTERNAL, UNAVAILABLE, DATA_LOSS (the server's failures; NOT_FOUND
	// or INVALID_ARGUMENT are the client's).
	ErrorCodes []string `yaml:"error_codes"`

	errors grpccode.Set // parsed by Validate
}

// Errors is ErrorCodes parsed.
func (g GRPC) Errors() grpccode.Set { return g.errors }

// Upstream tunes the connections to instances.
type Upstream struct {
	// DialTimeout bounds connecting to an instance. Default 2s.
	DialTimeout Duration `yaml:"dial_timeout"`
	// ResponseHeaderTimeout bounds the wait for an instance's response
	// headers after the request is sent; past it the client gets 504.
	// Default 30s.
	ResponseHeaderTimeout Duration `yaml:"response_header_timeout"`
	// MaxIdleConnsPerHost keeps this many idle keep-alive connections per
	// instance (Go's default of 2 makes a busy proxy churn connections).
	// Default 256.
	MaxIdleConnsPerHost int `yaml:"max_idle_conns_per_host"`
	// IdleConnTimeout closes idle upstream connections. Default 90s.
	IdleConnTimeout Duration `yaml:"idle_conn_timeout"`
	// InsecureSkipVerify disables TLS verification for https:// instances.
	// Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// MaxResponseHeaderBytes bounds each answer head from an instance (each
	// 1xx head too); a larger one is a 502 for that request only, read no
	// further than the bound. Default 65536; at most 1048576.
	MaxResponseHeaderBytes int64 `yaml:"max_response_header_bytes"`
	// FastPath sends bodiless idempotent requests to http:// instances on
	// canaryd's lean HTTP/1.1 path; false sends everything through Go's
	// http.Transport. Default true.
	FastPath *bool `yaml:"fast_path"`
}

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
}

// Mirror copies requests to a pool ("shadow traffic").
type Mirror struct {
	// Pool receives the copies: a pool of the route. Required.
	Pool string `yaml:"pool"`
	// Percent of the route's (eligible) requests copied. Default 100.
	Percent Percent `yaml:"percent"`
	// Shadow is the mirroring settings shared with rollout.shadow.
	Shadow MirrorOptions `yaml:",inline"`
}

// MirrorOptions are how copies are made, sent and compared; both
// routes[].mirror and rollout.shadow take them.
type MirrorOptions struct {
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

// Shadow is a rollout's shadow phase: before any live step, the canary
// gets copies of a share of the route's requests, judged like a step.
type Shadow struct {
	// Percent of the route's requests copied to the canary. Default 10.
	Percent Percent `yaml:"percent"`
	// MinRequests copies answered before the phase is judged. Default:
	// the rollout's min_requests.
	MinRequests int `yaml:"min_requests"`
	// MaxMismatchRate of compared answers (0..1), judged with the
	// analysis' confidence interval. Default 0.05.
	MaxMismatchRate *float64 `yaml:"max_mismatch_rate"`
	// Options are as for routes[].mirror.
	Options MirrorOptions `yaml:",inline"`
}

// Rollout strategies.
const (
	StrategyCanary    = "canary"
	StrategyLinear    = "linear"
	StrategyBlueGreen = "blue_green"
)

// Rollout is an automatic, analysed release of one pool over another.
type Rollout struct {
	// Strategy: "canary" (Steps, or Step up to 100), "linear" (Step every
	// Interval) or "blue_green" (preview at 0%, then one switch to 100).
	// Default "canary".
	Strategy string `yaml:"strategy"`
	// Stable and Canary name pools of the route. Required.
	Stable string `yaml:"stable"`
	Canary string `yaml:"canary"`
	// Steps are the canary's weights in percent, rising, ending at 100.
	// Default (canary): [1, 5, 25, 50, 100].
	Steps []Percent `yaml:"steps"`
	// Step is the increment of "linear", and of "canary" when it has no
	// Steps but a Step: step, 2×step... up to Max, then 100. Default 10.
	Step Percent `yaml:"step"`
	// Max is the last weight before the switch to 100 when steps come from
	// Step. Default 100.
	Max Percent `yaml:"max"`
	// Interval between analyses (and so the shortest time at a step).
	// Default 30s.
	Interval Duration `yaml:"interval"`
	// MinRequests the canary must answer in a step before its numbers are
	// judged; below it every check is inconclusive. Default 200.
	MinRequests int `yaml:"min_requests"`
	// FailureLimit failed analyses at one step roll the release back; each
	// rests on evidence no other used, and a passed step clears the count.
	// Default 2.
	FailureLimit int `yaml:"failure_limit"`
	// MaxInconclusive inconclusive analyses in a row pause the rollout.
	// Default 10.
	MaxInconclusive int `yaml:"max_inconclusive"`
	// MaxGathering analyses in a row may hold a step to gather evidence (a
	// confidence interval that straddles its bound) before the rollout
	// pauses with the verdicts that could not decide. Default 200.
	MaxGathering int `yaml:"max_gathering"`
	// PauseBefore lists weights to stop before, until "canaryd resume".
	// Default none.
	PauseBefore []Percent `yaml:"pause_before"`
	// Tripwire rolls back at once on a burst of canary errors.
	Tripwire Tripwire `yaml:"tripwire"`
	// Analysis is what each interval judges.
	Analysis Analysis `yaml:"analysis"`
	// Webhook receives every transition. Default none.
	Webhook Webhook `yaml:"webhook"`
	// Shadow starts the rollout in a shadow phase (phase "shadowing"):
	// copies of live requests only, judged, before the first live step.
	// Default: none.
	Shadow *Shadow `yaml:"shadow"`
}

// Tripwire is the fast path to rollback.
type Tripwire struct {
	// Disabled turns the tripwire off. Default false.
	Disabled bool `yaml:"disabled"`
	// Window the burst is counted over. Default 10s.
	Window Duration `yaml:"window"`
	// MinRequests canary requests within Window before it can fire.
	// Default 20.
	MinRequests int `yaml:"min_requests"`
	// MaxErrorRate of the canary within Window; at or above it (while the
	// stable pool stays under half of it) the release rolls back. Default 0.5.
	MaxErrorRate float64 `yaml:"max_error_rate"`
}

// Analysis lists the checks of each interval; all are optional, and with
// none the sample gate alone decides.
type Analysis struct {
	// MaxErrorRate of the canary since the step began (0..1). Default: off.
	MaxErrorRate *float64 `yaml:"max_error_rate"`
	// MaxLatencyP99 of the canary since the step began: at most 1% of its
	// requests slower than this. Default: off.
	MaxLatencyP99 Duration `yaml:"max_latency_p99"`
	// Confidence of the intervals max_error_rate and max_latency_p99 are
	// judged with (0.5..1): fail when the whole interval is above the
	// bound, pass when it is below, hold in between. Default 0.95.
	Confidence float64 `yaml:"confidence"`
	// CompareToStable judges the canary against stable over the same time.
	// Default: off.
	CompareToStable *Compare `yaml:"compare_to_stable"`
	// Prometheus runs PromQL checks. Default: none.
	Prometheus *PrometheusAnalysis `yaml:"prometheus"`
}

// Compare tests canary against stable statistically.
type Compare struct {
	// Confidence needed to call the canary worse (0.5..1). Default 0.99.
	Confidence float64 `yaml:"confidence"`
	// MaxRatio tolerated of canary over stable (error rate, latency).
	// Default 1.5.
	MaxRatio float64 `yaml:"max_ratio"`
	// MinDifference in error rate tolerated on top of the ratio, so that a
	// stable pool without errors does not make one canary error fatal.
	// Default 0.005.
	MinDifference *float64 `yaml:"min_difference"`
	// MinLatencyDifference: a slower canary fails only if its p50 or p99 is
	// also this much above stable's, so sub-millisecond noise on a fast
	// service is no reason to roll back. Default 10ms.
	MinLatencyDifference Duration `yaml:"min_latency_difference"`
}

// PrometheusAnalysis runs PromQL checks against a Prometheus server.
type PrometheusAnalysis struct {
	// URL of the Prometheus server. Required.
	URL string `yaml:"url"`
	// Timeout of one query. Default 5s.
	Timeout Duration `yaml:"timeout"`
	// Checks; each query must return one number.
	Checks []PromCheck `yaml:"checks"`
}

// PromCheck is one PromQL query and its bounds. In the query, {{route}},
// {{stable}}, {{canary}} and {{interval}} (the time since the step began,
// as a PromQL duration) are replaced.
type PromCheck struct {
	Name  string   `yaml:"name"`
	Query string   `yaml:"query"`
	Min   *float64 `yaml:"min"`
	Max   *float64 `yaml:"max"`
}

// Webhook is told of every rollout transition (POST, JSON).
type Webhook struct {
	// URL to POST to. Default "" (none).
	URL string `yaml:"url"`
	// Timeout of one attempt. Default 5s.
	Timeout Duration `yaml:"timeout"`
	// Retries after a failed attempt. Default 3.
	Retries *int `yaml:"retries"`
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
	// least one, no duplicates.
	Instances []string `yaml:"instances"`
	// Health, when set, replaces the route's health block for this pool.
	// Default: the route's.
	Health *Health `yaml:"health"`
	// Protocol spoken to the instances: "http1" (HTTP/1.1, over TLS for
	// https:// instances), "h2" (HTTP/2 over TLS, negotiated by ALPN:
	// https:// instances) or "h2c" (HTTP/2 without TLS, prior knowledge:
	// http:// instances; what a gRPC server without TLS speaks). Default
	// "http1".
	Protocol string `yaml:"protocol"`
	// TLS to https:// instances. Default: verified against the system's
	// roots, the instance's host as the name (upstream.insecure_skip_verify
	// aside).
	TLS *UpstreamTLS `yaml:"tls"`
	// urls are Instances parsed (URLs).
	urls []*url.URL
}

// Pool protocols.
const (
	ProtocolHTTP1 = "http1"
	ProtocolH2    = "h2"
	ProtocolH2C   = "h2c"
)

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
	// Cookie is the cookie that carries the user key. Default "".
	Cookie string `yaml:"cookie"`
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

// Percent is a weight in basis points (1% = 100), written in YAML as a
// percentage with at most two decimals ("10", "0.5", "33.33"). It is parsed
// from the text itself, not through a float, so 0.29 is exactly 29.
type Percent int

// invalidPercent marks a weight that failed to decode, so validation does
// not add a misleading "weights sum to ..." on top of the real problem.
const invalidPercent Percent = -1

// Full is 100%: the whole of a route's traffic, in basis points. It is
// balancer.Slots too (a test holds them equal).
const Full Percent = 10000

// BasisPoints is the weight in 1/100 of a percent (0..Full).
func (p Percent) BasisPoints() int { return int(p) }

func (p Percent) String() string {
	if p%100 == 0 {
		return strconv.Itoa(int(p) / 100)
	}
	s := fmt.Sprintf("%d.%02d", int(p)/100, int(p)%100)
	return strings.TrimSuffix(s, "0")
}

// ParsePercent reads "12", "12.5" or "12.34" as basis points.
func ParsePercent(s string) (Percent, error) {
	s = strings.TrimSpace(s)
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || !allDigits(whole) || (hasDot && (frac == "" || !allDigits(frac))) {
		return 0, fmt.Errorf("%q is not a percentage; write a number from 0 to 100 such as 10 or 2.5", s)
	}
	if len(frac) > 2 {
		return 0, fmt.Errorf("%q has more than two decimals; round it to two (e.g. %s.%s)", s, whole, frac[:2])
	}
	if len(whole) > 3 {
		return 0, fmt.Errorf("%q is above 100", s)
	}
	w, _ := strconv.Atoi(whole)
	f := 0
	if frac != "" {
		f, _ = strconv.Atoi(frac)
		if len(frac) == 1 {
			f *= 10
		}
	}
	bp := w*100 + f
	if Percent(bp) > Full {
		return 0, fmt.Errorf("%q is above 100", s)
	}
	return Percent(bp), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// UnmarshalYAML parses the scalar's text; errors carry the line.
func (p *Percent) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		*p = invalidPercent
		return lineError(n, "weight must be a number from 0 to 100")
	}
	v, err := ParsePercent(n.Value)
	if err != nil {
		*p = invalidPercent
		return lineError(n, "weight "+err.Error())
	}
	*p = v
	return nil
}

// Duration is a time.Duration written as "250ms", "2s" or "1m30s".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML parses Go duration syntax; errors carry the line.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return lineError(n, "a duration must be a string such as 2s or 500ms")
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		return lineError(n, fmt.Sprintf("%q is not a duration; write it as 2s, 500ms or 1m30s", n.Value))
	}
	if v < 0 {
		return lineError(n, fmt.Sprintf("duration %q is negative", n.Value))
	}
	*d = Duration(v)
	return nil
}

// lineError returns a yaml.TypeError so the decoder collects it with the
// others instead of stopping at the first.
func lineError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}
