package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"canaryd/grpccode"
	"canaryd/proxy/internal/h1"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func (st *state) modifyResponse(resp *http.Response) error {
	if resp.StatusCode < 100 {
		// http.ReadResponse takes any three digits; a status under 100
		// would make the server panic in WriteHeader.
		return fmt.Errorf("instance %s: status %03d is not an HTTP status", st.inst.Addr, resp.StatusCode)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols && resp.Request.Header.Get("Upgrade") == "" {
		// ReverseProxy would turn the client's connection into a tunnel to
		// the instance when neither side names a protocol. The fast path
		// refuses such an answer too (proxy/internal/h1).
		return fmt.Errorf("instance %s: 101 Switching Protocols answers a request that asked for no upgrade", st.inst.Addr)
	}
	st.status, st.resp = resp.StatusCode, resp
	if st.job != nil && st.mirror.opts.CompareHeaders {
		st.job.primaryHeader = resp.Header.Clone()
	}
	resp.Header[HeaderRequestID] = st.idValue[:]
	if st.setBucket && resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Header.Add("Set-Cookie", st.route.AffinityCookie(st.bucket, st.secure()))
	}
	if st.closeAfter && resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Header.Set("Connection", "close")
	}
	return nil
}

// secure: the client reached canaryd over TLS, or a trusted proxy in
// front says it did (X-Forwarded-Proto: https).
func (st *state) secure() bool {
	if st.in.TLS != nil {
		return true
	}
	if p := st.in.Header["X-Forwarded-Proto"]; len(p) > 0 && strings.EqualFold(p[0], "https") {
		return st.h.isTrusted(st.in.RemoteAddr)
	}
	return false
}

// handleError is the one place where an upstream error becomes a status.
func (st *state) handleError(w http.ResponseWriter, out *http.Request, err error) {
	h := st.h
	status := classify(out.Context(), err)
	msg := "canaryd: instance unreachable or failed"
	switch {
	case st.body.stalled():
		// Before the client-gone case: on HTTP/1 the server cancels the
		// request's context when a read of its connection times out, but
		// the client is there, and is owed its 408.
		status, msg = st.bodyFailed(st.body.err)
		st.closeAfter = true
	case status == StatusClientClosed:
	case st.body.err != nil:
		status, msg = st.bodyFailed(st.body.err) // the client's body broke, not the instance
	case status == http.StatusGatewayTimeout:
		msg = "canaryd: instance timed out"
	}
	st.status, st.err = status, err
	if status == StatusClientClosed {
		if ce := h.log.Check(zap.DebugLevel, "client went away"); ce != nil {
			ce.Write(zap.String("route", st.route.Name), zap.String("instance", st.inst.Addr), zap.String("request_id", st.id))
		}
		return // nobody to answer
	}
	if ce := h.log.Check(gatewayLevel(status), "upstream request failed"); ce != nil {
		ce.Write(zap.String("route", st.route.Name), zap.String("pool", st.pool.Name),
			zap.String("instance", st.inst.Addr), zap.Int("status", status),
			zap.Error(err), zap.String("request_id", st.id))
	}
	reply(w, st.closeAfter, status, st.id, msg)
}

// bodyFailed is the status and message for a request body that could not
// be read: over the size cap (413), stalled past request_body_timeout or
// under min_request_body_rate (408), or broken (400).
func (st *state) bodyFailed(err error) (int, string) {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("canaryd: request body over the %d-byte limit", st.h.maxBody)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout, "canaryd: the request body stalled (server.request_body_timeout, or under server.min_request_body_rate)"
	}
	return http.StatusBadRequest, "canaryd: the request body could not be read: " + err.Error()
}

// isGRPC reports a gRPC answer: content type application/grpc, alone or
// with a suffix (+proto, +json, ;charset).
func isGRPC(h http.Header) bool {
	ct := h.Get("Content-Type")
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// grpcStatus reads a call's grpc-status: from the trailers, else from the
// headers (a trailers-only answer). None, or a value that is not a code,
// reads as UNKNOWN, as a gRPC client reads it.
func grpcStatus(resp *http.Response) grpccode.Code {
	v := resp.Trailer.Get("Grpc-Status")
	if v == "" {
		v = resp.Header.Get("Grpc-Status")
	}
	c, _ := grpccode.FromHeader(v)
	return c
}

// gatewayLevel logs the instance's failures at WARN and the client's
// (bad or oversized body) at DEBUG: a client must not be able to fill the
// log with warnings.
func gatewayLevel(status int) zapcore.Level {
	if status < 500 {
		return zap.DebugLevel
	}
	return zap.WarnLevel
}

// rejectTarget refuses what a reverse proxy must not forward: an
// absolute-form target that is not an http(s) URL with a host and no
// userinfo (RFC 9110 section 4.2.4), and an Upgrade header that is not a
// list of protocol tokens. Absolute-form targets are otherwise accepted,
// as RFC 9112 section 3.2.2 requires of a server, and routed by their
// authority.
func rejectTarget(r *http.Request) string {
	// RequestURI is empty only for requests built in-process (not read from
	// a connection), which have no raw target to judge.
	if r.RequestURI != "" && r.RequestURI != "*" && !strings.HasPrefix(r.RequestURI, "/") {
		u := r.URL
		switch {
		case u.Scheme != "http" && u.Scheme != "https":
			return fmt.Sprintf("request target %q: only http and https absolute-form targets are accepted", r.RequestURI)
		case u.User != nil:
			return "request target: userinfo (user@) is not allowed in an http URL"
		case u.Host == "":
			return fmt.Sprintf("request target %q has no host", r.RequestURI)
		}
	}
	for _, v := range r.Header["Upgrade"] {
		for _, proto := range strings.Split(v, ",") {
			// Empty list elements are to be ignored (RFC 9110 section 5.6.1).
			if proto = strings.TrimSpace(proto); proto != "" && !h1.IsToken(strings.Replace(proto, "/", "", 1)) {
				return fmt.Sprintf("malformed Upgrade header %q", v)
			}
		}
	}
	return ""
}

// classify maps an upstream error to the status the client gets: the client
// gone → 499, a timeout (dial, response headers) → 504, anything else
// (refused, reset, malformed answer) → 502.
func classify(ctx context.Context, err error) int {
	if errors.Is(ctx.Err(), context.Canceled) {
		return StatusClientClosed
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// reply answers from canaryd itself; closeAfter also closes the client's
// connection.
func reply(w http.ResponseWriter, closeAfter bool, status int, id, msg string) {
	h := w.Header()
	if closeAfter {
		h.Set("Connection", "close")
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h[HeaderRequestID] = []string{id}
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

// requestID keeps a sane incoming X-Request-Id (so a trace spans hops) and
// otherwise makes one: 16 hex digits, random.
func requestID(h http.Header) string {
	if v := h[HeaderRequestID]; len(v) == 1 && validID(v[0]) {
		return v[0]
	}
	const hex = "0123456789abcdef"
	var b [16]byte
	x := rand.Uint64()
	for i := range b {
		b[i] = hex[x&15]
		x >>= 4
	}
	return string(b[:])
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// countingWriter counts response body bytes. Unwrap lets
// http.ResponseController (which ReverseProxy uses to flush and to hijack
// for upgrades) reach the real writer.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// mustStdLog adapts zap for the stdlib's *log.Logger hooks. NewStdLogAt
// fails only for invalid levels, which these constants are not.
func mustStdLog(l *zap.Logger, lvl zapcore.Level) *log.Logger {
	std, err := zap.NewStdLogAt(l, lvl)
	if err != nil {
		panic(err)
	}
	return std
}

// bufferPool reuses ReverseProxy's 32 KiB copy buffers; without one it
// allocates a fresh buffer for every response body. It holds array
// pointers: a pointer goes into the pool's interface without an
// allocation, where a slice (or a pointer to a copy of one) needs one.
type bufferPool struct{ p sync.Pool }

const copyBufSize = 32 << 10

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { return new([copyBufSize]byte) }}}
}

func (b *bufferPool) Get() []byte { return b.p.Get().(*[copyBufSize]byte)[:] }

func (b *bufferPool) Put(x []byte) {
	if cap(x) >= copyBufSize { // always, for what Get gave out
		b.p.Put((*[copyBufSize]byte)(x[:copyBufSize]))
	}
}
