package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"syscall"
	"time"

	"canaryd/balancer"
	"canaryd/proxy/internal/h1"
	"canaryd/upstream"
)

// TransportOptions tunes connections to instances. Zero values take the
// defaults given on each field.
type TransportOptions struct {
	// DialTimeout bounds connecting. Default 2s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers once the
	// request is written; past it the client gets 504. Default 30s.
	ResponseHeaderTimeout time.Duration
	// MaxIdleConnsPerHost keeps idle keep-alive connections per instance.
	// Default 256 (Go's default of 2 churns connections under load).
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes idle connections. Default 90s.
	IdleConnTimeout time.Duration
	// InsecureSkipVerify skips TLS verification of https instances.
	// Default false.
	InsecureSkipVerify bool
	// MaxResponseHeaderBytes bounds each answer head an instance sends
	// (each 1xx head too); a larger one is a 502 for that request, read no
	// further than the bound. Default DefaultMaxResponseHeaderBytes.
	MaxResponseHeaderBytes int64
	// DisableFastPath sends every request through http.Transport instead
	// of the lean HTTP/1.1 path (proxy/internal/h1). Default false: the
	// fast path carries the bodiless idempotent requests to http instances.
	DisableFastPath bool
	// Protocol spoken (see upstream.Protocol). Only HTTP/1.1 has the fast
	// path. Default "": upstream.HTTP1.
	Protocol upstream.Protocol
	// TLS dials https instances; nil: verified against the system's roots
	// (InsecureSkipVerify aside). http.Transport sets the server name to
	// the instance's host when it has none.
	TLS *tls.Config
}

// The zero TransportOptions' values are upstream's defaults, the config's
// too (upstream.Default*): declared once, there.
const (
	DefaultDialTimeout            = upstream.DefaultDialTimeout
	DefaultResponseHeaderTimeout  = upstream.DefaultResponseHeaderTimeout
	DefaultIdleConnTimeout        = upstream.DefaultIdleConnTimeout
	DefaultMaxIdleConnsPerHost    = upstream.DefaultMaxIdleConnsPerHost
	DefaultMaxResponseHeaderBytes = upstream.DefaultMaxResponseHeaderBytes
)

// Max1xx bounds the informational answers (1xx but 101) passed on to the
// client before the final one, on both paths; one more is a 502.
// (http.Transport alone has no such count under ReverseProxy: it bounds
// each 1xx head's size and, with them all, the response header timeout.)
const Max1xx = h1.DefaultMax1xx

// Transport is the HTTP/1.1 transport canaryd uses to reach instances. It
// ignores HTTP_PROXY variables (a router must not detour its traffic), never
// asks for compression itself (the client decides), and keeps a record of
// its open connections by address so that a drained instance's connections
// can be closed without touching anyone else's. Bodiless idempotent requests
// to http instances take a lean fast path (proxy/internal/h1) unless it is
// disabled; the rest goes through an http.Transport with the same settings.
type Transport struct {
	std    *http.Transport
	fast   *h1.Transport // nil when disabled
	dialer *net.Dialer

	mu    sync.Mutex // held on dial and close only, never per request
	conns map[string]map[*trackedConn]struct{}
}

// NewTransport returns a Transport tuned by o.
func NewTransport(o TransportOptions) *Transport {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.DialTimeout, DefaultDialTimeout)
	def(&o.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	def(&o.IdleConnTimeout, DefaultIdleConnTimeout)
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if o.MaxResponseHeaderBytes <= 0 {
		o.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
	}
	t := &Transport{
		conns:  map[string]map[*trackedConn]struct{}{},
		dialer: &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second},
	}
	if !o.DisableFastPath && (o.Protocol == "" || o.Protocol == upstream.HTTP1) {
		t.fast = h1.New(h1.Options{
			Dial:           func(ctx context.Context, addr string) (net.Conn, error) { return t.dial(ctx, "tcp", addr) },
			HeaderTimeout:  o.ResponseHeaderTimeout,
			IdleTimeout:    o.IdleConnTimeout,
			MaxIdlePerHost: o.MaxIdleConnsPerHost,
			MaxHeaderBytes: o.MaxResponseHeaderBytes,
			Max1xx:         Max1xx,
		})
	}
	t.std = &http.Transport{
		Proxy:                  nil,
		DialContext:            t.dial,
		MaxResponseHeaderBytes: o.MaxResponseHeaderBytes,
		MaxIdleConns:           0, // no global cap; the per-host cap rules
		MaxIdleConnsPerHost:    o.MaxIdleConnsPerHost,
		IdleConnTimeout:        o.IdleConnTimeout,
		ResponseHeaderTimeout:  o.ResponseHeaderTimeout,
		ExpectContinueTimeout:  time.Second,
		TLSHandshakeTimeout:    o.DialTimeout,
		DisableCompression:     true,
		TLSClientConfig:        o.TLS,
		Protocols:              new(http.Protocols),
	}
	if t.std.TLSClientConfig == nil {
		t.std.TLSClientConfig = &tls.Config{InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // opt-in, documented
	}
	switch o.Protocol {
	case upstream.H2:
		t.std.Protocols.SetHTTP2(true)
	case upstream.H2C:
		t.std.Protocols.SetUnencryptedHTTP2(true)
	default:
		t.std.Protocols.SetHTTP1(true)
	}
	if o.Protocol == upstream.H2 || o.Protocol == upstream.H2C {
		// Go's defaults but one: a stuck instance connection is found by
		// PING rather than by every stream on it timing out.
		t.std.HTTP2 = &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 15 * time.Second}
	}
	return t
}

func (t *Transport) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := t.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return t.track(c, addr), nil
}

// RoundTrip sends req to its instance.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, _, err := t.send(req)
	return resp, err
}

// send is RoundTrip, and says whether the fast path carried req. Only
// then is req done with when the answer comes: http.Transport writes a
// request on a goroutine of its own and returns an answer that arrives
// before the request is written whole (an early 413, bytes an instance
// sent ahead), so it may still read req's header and body after that.
func (t *Transport) send(req *http.Request) (resp *http.Response, fast bool, err error) {
	if t.fast != nil && t.fast.Carries(req) {
		resp, err = t.fast.RoundTrip(req)
		return resp, true, err
	}
	limit1xx(req)
	resp, err = t.std.RoundTrip(req)
	return resp, false, err
}

// errTooMany1xx is what limit1xx's hook returns past Max1xx.
var errTooMany1xx = fmt.Errorf("%w (more than %d)", h1.ErrTooMany1xx, Max1xx)

// limit1xx holds http.Transport to the fast path's bound on informational
// answers. The trace is the one ReverseProxy made for this request alone,
// so wrapping its hook changes nothing for anyone else; http.Transport
// reads the hook when a 1xx arrives and fails the request with the error
// the hook returns.
func limit1xx(req *http.Request) {
	trace := httptrace.ContextClientTrace(req.Context())
	if trace == nil || trace.Got1xxResponse == nil {
		return
	}
	next, n := trace.Got1xxResponse, 0
	trace.Got1xxResponse = func(code int, h textproto.MIMEHeader) error {
		if n++; n > Max1xx {
			return errTooMany1xx
		}
		return next(code, h)
	}
}

// CloseIdleConnections closes every idle connection, on both paths.
func (t *Transport) CloseIdleConnections() {
	if t.fast != nil {
		t.fast.CloseIdleConnections()
	}
	t.std.CloseIdleConnections()
}

// CloseConnsTo closes every connection open to addr (host:port) and says
// how many there were. Call it once the address has nothing in flight: an
// in-flight request on a closed connection fails.
func (t *Transport) CloseConnsTo(addr string) int {
	n := 0
	if t.fast != nil {
		n = t.fast.CloseIdleTo(addr)
	}
	t.mu.Lock()
	set := t.conns[addr]
	delete(t.conns, addr)
	t.mu.Unlock()
	for c := range set {
		c.Conn.Close()
	}
	return n + len(set)
}

// OpenConns is the number of connections open to addr.
func (t *Transport) OpenConns(addr string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns[addr])
}

func (t *Transport) track(c net.Conn, addr string) net.Conn {
	tc := &trackedConn{Conn: c, t: t, addr: addr}
	t.mu.Lock()
	set := t.conns[addr]
	if set == nil {
		set = map[*trackedConn]struct{}{}
		t.conns[addr] = set
	}
	set[tc] = struct{}{}
	t.mu.Unlock()
	return tc
}

type trackedConn struct {
	net.Conn
	t    *Transport
	addr string
	once sync.Once
}

// SyscallConn reaches the socket, for the fast path's idle check.
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		if set := c.t.conns[c.addr]; set != nil {
			delete(set, c)
			if len(set) == 0 {
				delete(c.t.conns, c.addr)
			}
		}
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

// RoundTrip is the state's transport: it sends the request and, once,
// sends it again to another instance when the first could not be
// connected to: nothing reached the instance, nothing was written to the
// client. Only replayable requests qualify (an idempotent method with no
// body or a re-readable one), so a POST is never sent twice.
func (st *state) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := st.send(req)
	if err == nil || !isDialError(err) || !replayable(req) || req.Context().Err() != nil || st.unreachable != nil {
		return resp, err
	}
	// A forced preview stays in the pool it named: the docs promise no
	// silent fallback for an explicit preview.
	pool, alt := st.route.PickExcept(st.pool, st.inst, st.via == balancer.ViaForce)
	if alt == nil {
		return resp, err
	}
	st.unreachable = st.inst
	st.inst.Release()
	alt.Acquire()
	st.pool, st.inst = pool, alt
	again := req.Clone(req.Context())
	setTarget(again, st.in.URL, alt.URL)
	if k := st.route.PropagateHeader; k != "" {
		again.Header[k] = pool.VersionValue() // the pool that serves now
	}
	return st.send(again)
}

// send hands req to the next transport and notes whether the request may
// outlive the answer (see Transport.send): such a state is not pooled.
func (st *state) send(req *http.Request) (*http.Response, error) {
	next := st.h.next
	if st.pool.Transport != nil {
		next = st.pool.Transport
	}
	if t, ok := next.(*Transport); ok {
		resp, fast, err := t.send(req)
		st.inUse = st.inUse || !fast
		return resp, err
	}
	st.inUse = true
	return next.RoundTrip(req)
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func replayable(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
	default:
		return false
	}
	return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
}
