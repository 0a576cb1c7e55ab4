// Package proxy is canaryd's request path: an http.Handler that matches a
// route in the live table, picks a pool and an instance, and forwards with
// httputil.ReverseProxy (Rewrite, never Director). Errors are mapped to
// statuses in one place (classify), and a request whose connection could not
// even be opened is retried once on another instance when that is safe.
package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"canaryd/balancer"
	"canaryd/grpccode"
	"canaryd/overload"

	"go.uber.org/zap"
)

// StatusClientClosed is recorded (never sent) when the client went away
// before the answer: nginx's 499. It is not a backend failure.
const StatusClientClosed = 499

// HeaderRequestID carries the request id to instances and back to clients.
const HeaderRequestID = "X-Request-Id"

// Tables is where the proxy reads the live routing table.
type Tables interface {
	Load() *balancer.Table
}

// Observer receives the outcome of every request that matched a route. It
// runs on the request path: keep it cheap, and do not keep the pointer.
type Observer interface {
	Observe(*Outcome)
}

// Outcome is what happened to one request.
type Outcome struct {
	Route *balancer.Route
	// Pool and Instance that served (or were chosen); nil when none was.
	Pool *balancer.Pool
	// Forced: the request named Pool by the route's force header or cookie
	// (a preview), and was allowed to.
	Forced bool
	// Via is how Pool was chosen (the access log's routed_by), and Rule
	// the rule that chose it when Via is balancer.ViaRule.
	Via      balancer.Via
	Rule     *balancer.Rule
	Instance *balancer.Instance
	// Unreachable is the instance that refused the connection before a
	// retry went to Instance; nil when there was no retry.
	Unreachable *balancer.Instance
	// Status sent to the client; StatusClientClosed when it went away.
	Status    int
	Duration  time.Duration
	Err       error // the upstream error behind a 502/504/499, if any
	RequestID string
	// Request is the client's request.
	Request *http.Request
	// Bytes of response body written to the client; -1 unless
	// Options.CountBytes.
	Bytes int64
	// GRPC is a gRPC call's grpc-status (from its trailers, or a
	// trailers-only answer; UNKNOWN when it sent none), when IsGRPC: the
	// answer's content type was application/grpc. GRPCFailed: the code is
	// in Options.GRPCErrors.
	GRPC       grpccode.Code
	IsGRPC     bool
	GRPCFailed bool
}

// Counted is the status canaryd's own numbers count the request as: the
// status sent, or for a failed gRPC call (sent as 200) its code's HTTP
// equivalent (UNAVAILABLE → 503, DEADLINE_EXCEEDED → 504, others 5xx).
func (o *Outcome) Counted() int {
	if o.GRPCFailed {
		return o.GRPC.HTTPStatus()
	}
	return o.Status
}

// GatewayFailure reports a gateway failure of the instance, as Envoy's
// outlier detection counts them: canaryd could not reach it, it reset or
// timed out (502/504 made by canaryd), or it answered 502, 503 or 504
// itself. A client that went away (499) is not one.
func (o *Outcome) GatewayFailure() bool {
	switch o.Counted() {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return o.Instance != nil
	}
	return false
}

// Options configures a Handler. The zero value is usable.
type Options struct {
	// Logger for upstream errors (WARN) and client disconnects (DEBUG).
	// Default: no logging.
	Logger *zap.Logger
	// Observer receives every outcome. Default: none.
	Observer Observer
	// TrustedProxies are peers whose Forwarded and X-Forwarded-* headers are
	// kept and extended. Default: none (every peer's are replaced).
	TrustedProxies []netip.Prefix
	// Transport to instances. Default: NewTransport(TransportOptions{}).
	Transport http.RoundTripper
	// CountBytes counts the response bytes of each request for
	// Outcome.Bytes (the access log). It costs a small wrapper per request.
	// Default false.
	CountBytes bool
	// MaxRequestBodyBytes caps request bodies: a larger Content-Length gets
	// 413 at once, and a streamed body that grows past it is cut and
	// answered 413. Bodies are streamed, never buffered. Default 0: no cap.
	MaxRequestBodyBytes int64
	// GRPCErrors are the grpc-status codes that make a gRPC call count as
	// failed. Default: none (use grpccode.DefaultErrors).
	GRPCErrors grpccode.Set
	// BodyTimeout is the longest wait between two reads of a request
	// body (not a gRPC call's); past it the client gets 408. Default 0:
	// none.
	BodyTimeout time.Duration
	// MinBodyRate, when above 0, cuts a body whose average rate since the
	// request began is under it (bytes a second) once BodyRateGrace has
	// passed, with 408. Default 0: off.
	MinBodyRate   int64
	BodyRateGrace time.Duration
	// BufferBodyBytes: a body with a Content-Length up to this is read
	// whole before an instance is chosen (not gRPC, not an upgrade), so
	// that a slow upload holds no upstream connection. Default 0: off.
	BufferBodyBytes int64
	// Streams keeps the long-lived requests in flight, for a rollback to
	// end (streams.go). Default: none kept.
	Streams *Streams
}

// Handler is the proxy. Create it with New.
type Handler struct {
	grpcErrors grpccode.Set
	countBytes bool
	maxBody    int64
	bodyLimits bodyLimits
	bufferMax  int64
	tables     Tables
	next       http.RoundTripper
	log        *zap.Logger
	obs        Observer
	trusted    []netip.Prefix
	bufPool    *bufferPool
	errorLog   *log.Logger
	states     sync.Pool
	streams    *Streams
}

// New returns a proxy reading routes from tables.
func New(tables Tables, o Options) *Handler {
	h := &Handler{tables: tables, log: o.Logger, obs: o.Observer, trusted: o.TrustedProxies, countBytes: o.CountBytes, maxBody: o.MaxRequestBodyBytes, grpcErrors: o.GRPCErrors,
		bodyLimits: bodyLimits{timeout: o.BodyTimeout, rate: o.MinBodyRate, grace: o.BodyRateGrace}, bufferMax: o.BufferBodyBytes,
		streams: o.Streams}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	h.next = o.Transport
	if h.next == nil {
		h.next = NewTransport(TransportOptions{})
	}
	h.bufPool = newBufferPool()
	// ReverseProxy logs body-copy failures itself; finish logs them with
	// their cause and level, so this copy is for debugging only.
	h.errorLog = mustStdLog(h.log.Named("reverseproxy"), zap.DebugLevel)
	h.states.New = h.newState
	return h
}

// state is one request's routing decision and what became of it. States
// are pooled, and each owns a ReverseProxy whose hooks are bound to it
// once: Rewrite, the retrying transport and the error handler find the
// request's state without a context value (which would cost a context and
// a copy of the request every time).
type state struct {
	h  *Handler
	rp httputil.ReverseProxy
	call
}

// call is the per-request part of a state, zeroed between requests.
type call struct {
	route       *balancer.Route
	pool        *balancer.Pool
	inst        *balancer.Instance
	unreachable *balancer.Instance
	via         balancer.Via
	rule        *balancer.Rule
	// setBucket: the answer gives the client its affinity cookie, for
	// bucket.
	setBucket bool
	bucket    int
	in        *http.Request
	id        string
	// idValue is id as a header value, one slice for the request to the
	// instance and the answer to the client: both only read it.
	idValue [1]string
	status  int
	err     error
	// resp is the instance's answer (for a gRPC call's trailers, which
	// are there once its body has been read to the end).
	resp *http.Response
	// closeAfter closes the client's connection after the answer.
	closeAfter bool
	// mirror and job: the request is copied to the route's mirror once its
	// answer is done; hasher digests that answer's body for the comparison.
	mirror *Mirror
	job    *mirrorJob
	hasher bodyHasher
	// inUse: the transport may still read the outgoing request (its header
	// values share idValue, its body is &body) after the answer, so the
	// state must not be reused.
	inUse    bool
	counter  countingWriter
	body     watchedBody
	buffered bufferedBody
	out      Outcome // handed to the Observer; lives as long as the state
}

func (h *Handler) newState() any {
	st := &state{h: h}
	st.rp = httputil.ReverseProxy{
		Rewrite:        st.rewrite,
		Transport:      st,
		ModifyResponse: st.modifyResponse,
		ErrorHandler:   st.handleError,
		BufferPool:     h.bufPool,
		ErrorLog:       h.errorLog,
	}
	return st
}

// watchedBody remembers why the client's body could not be read, so that
// a broken, oversized or stalled body is blamed on the client (400, 413,
// 408), not on the instance it was being streamed to. With a deadliner it
// sets the read deadline before each read (request_body_timeout and the
// minimum rate), and clears it at the end of the body: a deadline left
// set would make the server's background read cancel the request while
// its answer is still streaming. It sets none once the handler has
// returned (handlerDone): http.Transport may still read the body then,
// and the connection may already carry the next request (on HTTP/2 the
// writer is gone).
type watchedBody struct {
	io.ReadCloser
	err error
	// mu orders the setting of a deadline with the handler's end.
	mu     sync.Mutex
	d      deadliner // nil: no deadline (none asked, or the handler returned)
	limits *bodyLimits
	start  time.Time
	n      int64 // bytes read
}

// deadliner is the server's response writer: both HTTP/1 and HTTP/2 ones
// have SetReadDeadline (http.ResponseController's way in, without its
// allocation).
type deadliner interface {
	SetReadDeadline(time.Time) error
}

// bodyLimits are the request body's timeout and minimum rate.
type bodyLimits struct {
	timeout time.Duration
	rate    int64
	grace   time.Duration
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.d != nil {
		b.d.SetReadDeadline(b.deadline())
	}
	b.mu.Unlock()
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err != nil && err != io.EOF {
		b.err = err
	}
	if err == io.EOF {
		b.mu.Lock()
		if b.d != nil {
			b.d.SetReadDeadline(time.Time{})
			b.d = nil
		}
		b.mu.Unlock()
	}
	return n, err
}

// handlerDone: the handler is returning; no deadline is set after it.
func (b *watchedBody) handlerDone() {
	b.mu.Lock()
	b.d = nil
	b.mu.Unlock()
}

// deadline is when the next read must have returned: the body timeout
// from now, or sooner when the minimum rate would be broken by then (the
// time at which what was read so far falls under the rate).
func (b *watchedBody) deadline() time.Time {
	now := time.Now()
	dl := now.Add(b.limits.timeout)
	if r := b.limits.rate; r > 0 {
		byRate := b.start.Add(b.limits.grace + time.Duration(float64(b.n)/float64(r)*float64(time.Second)))
		if byRate.Before(dl) {
			dl = byRate
		}
	}
	return dl
}

// stalled reports a body cut by its deadline.
func (b *watchedBody) stalled() bool { return errors.Is(b.err, os.ErrDeadlineExceeded) }

// bufferedBody is a body read whole, sent from memory.
type bufferedBody struct{ bytes.Reader }

func (*bufferedBody) Close() error { return nil }

// bufferable: a body with a length within the bound, not a gRPC call
// (a stream by nature) and not an upgrade (its body is the tunnel).
func (h *Handler) bufferable(r *http.Request) bool {
	return r.ContentLength > 0 && r.ContentLength <= h.bufferMax && len(r.TransferEncoding) == 0 &&
		r.Header["Upgrade"] == nil && !isGRPC(r.Header)
}

// readWhole reads a body of n bytes. Memory grows with what arrives,
// never to n at once: a client that claims 64 KiB and sends one byte holds
// 4 KiB.
func readWhole(body io.Reader, n int64) ([]byte, error) {
	buf := make([]byte, 0, min(n, 4096))
	for int64(len(buf)) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, int(min(n, 2*int64(cap(buf))))-len(buf))
		}
		m, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF && int64(len(buf)) < n {
			return nil, io.ErrUnexpectedEOF
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
	}
	// One more read meets the end, which the server waits for before it
	// watches the connection for the client going away.
	var one [1]byte
	if m, err := body.Read(one[:]); m > 0 || (err != nil && err != io.EOF) {
		return nil, fmt.Errorf("request body is longer than its Content-Length of %d bytes", n)
	}
	return buf, nil
}

// ServeHTTP reads the table once; everything after works on that snapshot.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := requestID(r.Header)
	// Go's server has already resolved Content-Length against
	// Transfer-Encoding (chunked wins) and removed the Content-Length, so
	// canaryd cannot tell a smuggling attempt from an honest chunked upload.
	// RFC 9112 section 6.3 requires closing the connection after such a
	// request: it is done for every chunked request, so that nothing sent
	// after the body is read as another request. The header goes on the
	// final answer only (modifyResponse, reply): set now, a 1xx would carry
	// it and ReverseProxy would then clear it from the final one.
	closeAfter := len(r.TransferEncoding) > 0
	if msg := rejectTarget(r); msg != "" {
		reply(w, closeAfter, http.StatusBadRequest, id, "canaryd: "+msg)
		return
	}
	if h.maxBody > 0 && r.ContentLength > h.maxBody {
		reply(w, closeAfter, http.StatusRequestEntityTooLarge, id, fmt.Sprintf("canaryd: request body of %d bytes is over the %d-byte limit", r.ContentLength, h.maxBody))
		return
	}
	// For an absolute-form target Go's server has set Host from the
	// target's authority and ignored the Host header (RFC 9112 section
	// 3.2.2), so the route is the target's.
	route := h.tables.Load().Match(r.Host, r.URL.Path)
	if route == nil {
		reply(w, closeAfter, http.StatusNotFound, id, "canaryd: no route for this host and path")
		return
	}
	st := h.states.Get().(*state)
	if r.Body != nil && r.Body != http.NoBody {
		body := r.Body
		if h.maxBody > 0 {
			body = http.MaxBytesReader(w, body, h.maxBody)
		}
		st.body = watchedBody{ReadCloser: body, limits: &h.bodyLimits, start: start}
		// A gRPC stream may be quiet between messages for as long as it
		// likes (HTTP/2's PINGs and idle_timeout watch it): no body
		// deadline for it.
		if d, ok := w.(deadliner); ok && h.bodyLimits.timeout > 0 && !isGRPC(r.Header) {
			st.body.d = d
		}
		r.Body = &st.body
		if h.bufferMax > 0 && h.bufferable(r) {
			// Read before an instance is chosen: a slow upload holds no
			// upstream connection, and counts toward no instance's load.
			data, err := readWhole(&st.body, r.ContentLength)
			if err != nil {
				status, msg := st.bodyFailed(err)
				reply(w, true, status, id, msg)
				h.observe(&Outcome{Route: route, Status: status, Duration: time.Since(start), RequestID: id, Request: r, Bytes: -1, Err: err})
				st.body = watchedBody{}
				h.states.Put(st)
				return
			}
			st.buffered.Reset(data)
			r.Body = &st.buffered
		}
	}
	req := balancer.Request{Header: r.Header, RawQuery: r.URL.RawQuery, Peer: r.RemoteAddr}
	if route.NeedsClient() {
		req.Client = h.clientAddr(r)
	}
	if route.PropagateHeader != "" && r.Header[route.PropagateHeader] != nil {
		req.TrustedPeer = h.isTrusted(r.RemoteAddr)
	}
	c := route.Choose(&req)
	pool, inst := c.Pool, c.Instance
	if inst == nil {
		reply(w, closeAfter, http.StatusServiceUnavailable, id, "canaryd: no available instance")
		h.observe(&Outcome{Route: route, Pool: pool, Forced: c.Via == balancer.ViaForce, Via: c.Via, Rule: c.Rule, Status: http.StatusServiceUnavailable,
			Duration: time.Since(start), RequestID: id, Request: r, Bytes: -1})
		st.body, st.buffered = watchedBody{}, bufferedBody{}
		h.states.Put(st)
		return
	}
	in := r
	if h.streams != nil && route.TrackStreams && isStream(r) {
		// A stream gets a context of its own, which a rollback cancels
		// (a plain request costs nothing here). st.in stays the client's
		// request, whose context says whether the client went away.
		ctx, cancel := context.WithCancel(r.Context())
		r = r.WithContext(ctx)
		end := cancel
		if body := r.Body; r.ProtoMajor == 2 && body != nil && body != http.NoBody {
			// An HTTP/2 upstream request blocked reading the client's
			// body (a gRPC stream between messages) does not see its
			// context end; closing the body (an HTTP/2 body closes without
			// waiting) ends that read, and the upstream stream with it.
			end = func() {
				cancel()
				body.Close()
			}
		}
		s := h.streams.add(route.Name, pool.Name, end)
		defer func() {
			h.streams.remove(s)
			cancel()
		}()
	}
	// call is zero here (finish zeroes it before pooling) but for the
	// body, which r.Body may point into.
	st.route, st.pool, st.inst, st.via, st.rule, st.in, st.closeAfter = route, pool, inst, c.Via, c.Rule, in, closeAfter
	st.setBucket, st.bucket = c.NewBucket >= 0, c.NewBucket
	st.id, st.idValue = id, [1]string{id}
	inst.Acquire()
	if route.MirrorPool != nil && pool != route.MirrorPool { // a copy to the pool that answers compares nothing
		// The route's Mirror is one this package made (NewMirror): the
		// table's builder has no other to give.
		if m, ok := route.Mirror.(*Mirror); ok {
			if st.job = m.prepare(route, r, id); st.job != nil {
				st.mirror = m
				if m.opts.CompareBody {
					st.hasher = bodyHasher{ResponseWriter: w, h: sha256.New(), max: m.opts.CompareMaxBytes, d: &st.job.primaryBody}
					w = &st.hasher
				}
			}
		}
	}
	if h.countBytes {
		st.counter = countingWriter{ResponseWriter: w}
		w = &st.counter
	}
	defer h.finish(st, start)
	st.rp.ServeHTTP(w, r)
}

// finish accounts for the request, also when ReverseProxy aborts it with
// http.ErrAbortHandler (the response body broke after headers were sent),
// which it then re-raises so the server drops the connection.
func (h *Handler) finish(st *state, start time.Time) {
	p := recover()
	st.body.handlerDone()
	st.inst.Release()
	if p != nil {
		if st.in.Context().Err() != nil {
			st.status = StatusClientClosed
		} else {
			st.status = http.StatusBadGateway
			if ce := h.log.Check(zap.WarnLevel, "response body from instance broke off"); ce != nil {
				ce.Write(zap.String("route", st.route.Name), zap.String("pool", st.pool.Name),
					zap.String("instance", st.inst.Addr), zap.String("request_id", st.id))
			}
		}
	}
	if h.obs != nil {
		st.out = Outcome{
			Route: st.route, Pool: st.pool, Forced: st.via == balancer.ViaForce, Via: st.via, Rule: st.rule,
			Instance: st.inst, Unreachable: st.unreachable,
			Status: st.status, Duration: time.Since(start), Err: st.err, RequestID: st.id,
			Request: st.in, Bytes: -1,
		}
		if h.countBytes {
			st.out.Bytes = st.counter.n
		}
		if p == nil && st.resp != nil && st.status == http.StatusOK && isGRPC(st.resp.Header) {
			st.out.IsGRPC = true
			st.out.GRPC = grpcStatus(st.resp)
			st.out.GRPCFailed = h.grpcErrors.Has(st.out.GRPC)
		}
		h.obs.Observe(&st.out)
	}
	if j := st.job; j != nil && p == nil && st.status != StatusClientClosed {
		// The real answer is done: now, and never before, the copy goes.
		j.primaryStatus, j.primaryDur = st.status, time.Since(start)
		if st.hasher.h != nil {
			st.hasher.finish()
		}
		st.mirror.enqueue(j)
	}
	if p != nil {
		panic(p)
	}
	if st.inUse {
		return // left to the collector once http.Transport is done with it
	}
	st.call = call{}
	h.states.Put(st)
}

func (h *Handler) observe(o *Outcome) {
	if h.obs != nil {
		h.obs.Observe(o)
	}
}

func (st *state) rewrite(pr *httputil.ProxyRequest) {
	h := st.h
	setTarget(pr.Out, pr.In.URL, st.inst.URL)
	if !st.route.PreserveHost {
		pr.Out.Host = ""
	}
	// ReverseProxy has already dropped the client's forwarding headers
	// (with Rewrite it does so before we run). Keep them only from a proxy
	// we trust, then add this hop.
	trusted := h.isTrusted(pr.In.RemoteAddr)
	if trusted {
		copyHeader(pr.Out.Header, pr.In.Header, "X-Forwarded-For")
	}
	pr.SetXForwarded()
	if trusted {
		copyHeader(pr.Out.Header, pr.In.Header, "Forwarded")
		copyHeader(pr.Out.Header, pr.In.Header, "X-Forwarded-Host")
		copyHeader(pr.Out.Header, pr.In.Header, "X-Forwarded-Proto")
	}
	pr.Out.Header[HeaderRequestID] = st.idValue[:]
	// The preview secret is between the client and canaryd: an instance
	// (and its logs) never sees it.
	if k := st.route.ForceSecretHeader; k != "" {
		delete(pr.Out.Header, k)
	}
	// The version chosen goes on, so that the next hop (another route,
	// another canaryd) keeps the user on it; a client's own value is
	// replaced.
	if k := st.route.PropagateHeader; k != "" {
		pr.Out.Header[k] = st.pool.VersionValue()
	}
}

func copyHeader(dst, src http.Header, key string) {
	if v := src[key]; len(v) > 0 {
		dst[key] = v
	}
}

// setTarget points out at the instance: its scheme and host, and its base
// path (if any) in front of the client's path.
func setTarget(out *http.Request, in, target *url.URL) {
	out.URL.Scheme = target.Scheme
	out.URL.Host = target.Host
	out.URL.Path = target.Path + in.Path
	if in.RawPath != "" {
		out.URL.RawPath = target.EscapedPath() + in.RawPath
	} else {
		out.URL.RawPath = ""
	}
}

// clientAddr is the client's address for source rules: the one the
// overload limits count (overload.ClientOf), so that a rule and a limit
// never disagree on who the client is.
func (h *Handler) clientAddr(r *http.Request) netip.Addr {
	return overload.ClientOf(r.RemoteAddr, r.Header, h.trusted)
}

func (h *Handler) isTrusted(remoteAddr string) bool {
	if len(h.trusted) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range h.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
