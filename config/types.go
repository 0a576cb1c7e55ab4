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
	// Routes are matched by host and longest path prefix. At least one,
	// here or in the included files.
	// Routes are what a live reload changes; every other section needs a
	// restart (see docs/config.md).
	Routes []Route `yaml:"routes"`
	// Include names files that hold more routes (each a `routes:` list),
	// by globs relative to this file's directory ("routes.d/*.yaml"): a
	// wildcard in the file name only. Watched like this file; an edit of
	// one re-reads that file only. Default none.
	Include []string `yaml:"include"`
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
	// Pprof serves Go's profiles (net/http/pprof) at /debug/pprof/ on the
	// admin listener, every one of them behind the admin token. Needs
	// token_file unless the admin listener is on loopback. Default false.
	Pprof bool `yaml:"pprof"`
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
	// Limits bound the connections and requests canaryd admits, in all
	// and per client, so that one source cannot take the descriptors and
	// memory every other client needs (docs/reliability.md, "Overload").
	Limits Limits `yaml:"limits"`
	// RequestBodyTimeout is the longest wait between two reads of a
	// request body (nginx's client_body_timeout): a client that sends
	// nothing for this long gets 408 and its connection closes. Not for
	// gRPC calls (a stream may be quiet between messages). Default 60s.
	RequestBodyTimeout Duration `yaml:"request_body_timeout"`
	// MinRequestBodyRate cuts uploads slower than a rate once a grace has
	// passed. Default off (see BodyRate).
	MinRequestBodyRate BodyRate `yaml:"min_request_body_rate"`
	// ClientWriteTimeout is the longest a write to a client may wait while
	// the client reads nothing (a slow reader): past it the connection
	// closes, so a reader that stalls frees its memory and its upstream
	// connection. It is not a bound on a whole answer: a stream that the
	// client keeps reading lives as long as it likes. Default 60s (nginx's
	// send_timeout).
	ClientWriteTimeout Duration `yaml:"client_write_timeout"`
}

// Limits are server.limits. A zero (or absent) key takes a default
// derived from the process's descriptor limit (RLIMIT_NOFILE, which Go
// raises to its hard limit at start): with N descriptors, headroom =
// max(64, N/4) is kept for upstream connections beyond one per request,
// probes, the admin listener, etcd and the state files, and
// max_connections = max_requests_in_flight = (N - headroom) / 2 (a
// proxied request holds its client's descriptor and one upstream
// descriptor); the per-client limits are a quarter of those. canaryd logs
// the limits it runs with at start.
type Limits struct {
	// MaxConnections is how many client connections the proxy listener
	// holds open at once; a connection over it is closed at once, before
	// TLS. Default: derived (above).
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerClient is how many of them one source address may
	// hold (the PROXY protocol's address when server.proxy_protocol is
	// on; an IPv6 address by its /64, for both per-client limits). Peers in trusted_proxies that do not send PROXY headers are
	// exempt: they carry many clients. Default: a quarter of
	// max_connections.
	MaxConnectionsPerClient int `yaml:"max_connections_per_client"`
	// MaxRequestsInFlight is how many requests are served at once; one
	// over it is answered 503 with Retry-After. Default: derived (above).
	MaxRequestsInFlight int `yaml:"max_requests_in_flight"`
	// MaxRequestsInFlightPerClient is how many of them one client may
	// have: the address X-Forwarded-For names for this client (behind
	// trusted_proxies, the nearest address that is not one of them).
	// Default: a quarter of max_requests_in_flight.
	MaxRequestsInFlightPerClient int `yaml:"max_requests_in_flight_per_client"`
}

// BodyRate is server.min_request_body_rate. It is off by default: a
// mobile client on a bad link can upload slower than any rate that would
// stop an attacker, and with request_body_timeout, request buffering and
// the per-client limits a slow upload already costs one connection and
// what it sent; turn it on where uploads come from servers.
type BodyRate struct {
	// BytesPerSecond is the lowest average rate of a body since the
	// request began. Default 0: off.
	BytesPerSecond int64 `yaml:"bytes_per_second"`
	// Grace is how long a body may start slowly before the rate counts.
	// Default 10s.
	Grace Duration `yaml:"grace"`
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
	// MaxReadFrameSize is the largest frame canaryd accepts, advertised
	// as SETTINGS_MAX_FRAME_SIZE. It may not exceed
	// max_receive_buffer_per_stream: a DATA frame larger than the stream's
	// window breaks flow control, and advertising one invites it. Default
	// the smaller of 1 MiB and max_receive_buffer_per_stream (256 KiB).
	MaxReadFrameSize int `yaml:"max_read_frame_size"`
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
	// Ciphers are the TLS 1.2 cipher suites offered, by Go's names
	// (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, ...). Default: the six
	// ECDHE suites with AEAD ciphers (AES-GCM, ChaCha20-Poly1305); no CBC,
	// no RSA key exchange. TLS 1.3's suites are not configurable (Go
	// offers all three, all AEAD).
	Ciphers []string `yaml:"ciphers"`
	// Curves are the key exchange groups, in order of preference:
	// X25519MLKEM768, X25519, P-256, P-384, P-521. Default: Go's
	// (X25519MLKEM768, X25519, P-256, P-384, P-521).
	Curves []string `yaml:"curves"`
	// SessionTicketRotation is how often a new session ticket key starts
	// encrypting tickets; the two before it still decrypt, so a ticket
	// resumes for up to three periods. In a cluster the keys are shared
	// through etcd, so a session resumes on any member. Default 12h; at
	// least 1s.
	SessionTicketRotation Duration `yaml:"session_ticket_rotation"`
	// OCSPStapling staples an OCSP response to the handshake when a
	// certificate names a responder (fetched in the background, refreshed
	// halfway to its next update; a handshake never waits for it).
	// Default true.
	OCSPStapling *bool `yaml:"ocsp_stapling"`
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
	// RequestBuffering reads small request bodies whole before an
	// upstream connection is taken.
	RequestBuffering RequestBuffering `yaml:"request_buffering"`
}

// RequestBuffering is upstream.request_buffering.
type RequestBuffering struct {
	// MaxBytes: a request body whose Content-Length is at most this many
	// bytes is read whole from the client before an instance is chosen,
	// so a slow upload never holds an upstream connection (nginx's
	// proxy_request_buffering, HAProxy's http-buffer-request). Larger
	// bodies, bodies without a length, gRPC and WebSocket streams are
	// streamed as they come. Memory grows only with what the client has
	// sent. 0 turns buffering off. Default 65536 (64 KiB: most API and
	// form bodies).
	MaxBytes *int64 `yaml:"max_bytes"`
}

// Max is max_bytes after defaults (0: off).
func (b RequestBuffering) Max() int64 {
	if b.MaxBytes == nil {
		return 0
	}
	return *b.MaxBytes
}

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
