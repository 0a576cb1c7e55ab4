// Package h1 is canaryd's lean HTTP/1.1 client for the requests that make
// up nearly all proxied traffic: plain-http instance, no request body,
// idempotent method, no upgrade. It writes the request and reads the answer
// on the caller's own goroutine. http.Transport instead hands every request
// to a per-connection writer goroutine and the answer back from a reader
// goroutine that is always parked in a read; on a loopback benchmark those
// hand-offs, their channels and the extra read syscall were the largest
// share of canaryd's own CPU per request (docs/benchmarks.md).
//
// The rule it keeps: it carries a request only where it is as correct as
// http.Transport, which stays the reference it is tested against
// (proxy/conformance_test.go). In particular a connection is reused only
// when the answer on it was framed exactly and nothing else is buffered,
// and an idle connection that became readable (data, EOF, a 408) is never
// reused: bytes an instance sends beyond its answer can never become
// another client's answer.
package h1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Options configures a Transport. Every field is required but Max1xx.
type Options struct {
	// Dial opens a connection to addr (host:port).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// HeaderTimeout bounds the wait for the final answer's head once the
	// request is written, informational answers included.
	HeaderTimeout time.Duration
	// IdleTimeout closes connections idle for longer.
	IdleTimeout time.Duration
	// MaxIdlePerHost bounds the idle connections kept per address.
	MaxIdlePerHost int
	// MaxHeaderBytes bounds each answer head (and each 1xx head), as
	// http.Transport's MaxResponseHeaderBytes does; a larger one fails the
	// request with ErrHeadTooLarge after reading at most that many bytes.
	MaxHeaderBytes int64
	// Max1xx bounds the informational answers passed on before the final
	// one; one more fails the request with ErrTooMany1xx. Default 0: 5.
	Max1xx int
}

// DefaultMax1xx is Options.Max1xx's default.
const DefaultMax1xx = 5

// ErrTooMany1xx and ErrHeadTooLarge fail a request whose instance sent too
// many informational answers or too large a head.
var (
	ErrTooMany1xx   = errors.New("too many 1xx informational answers")
	ErrHeadTooLarge = errors.New("answer head over the size limit")
)

// Transport sends requests over pooled HTTP/1.1 connections, one pool per
// address. Create it with New.
type Transport struct {
	o     Options
	pools sync.Map // address → *pool
}

// New returns a Transport tuned by o.
func New(o Options) *Transport {
	if o.Max1xx <= 0 {
		o.Max1xx = DefaultMax1xx
	}
	return &Transport{o: o}
}

// Carries says whether req can take this path. Anything it cannot carry
// exactly as http.Transport would goes to http.Transport.
func (t *Transport) Carries(req *http.Request) bool {
	u := req.URL
	if u.Scheme != "http" || u.Opaque != "" || u.User != nil || req.ContentLength != 0 ||
		(req.Body != nil && req.Body != http.NoBody) || req.Close {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
	default:
		return false // not replayable: a stale connection could not be retried
	}
	if _, ok := req.Header["Upgrade"]; ok {
		return false
	}
	if req.Host != "" && !validHost(req.Host) {
		return false
	}
	return validHeader(req.Header)
}

// validHost rejects what http.Transport would rewrite or refuse in a Host
// header (IPv6 zones, non-ASCII, separators), leaving those cases to it.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c <= ' ' || c >= 0x7f || c == '%' || c == '/' || c == '@' || c == '\\' {
			return false
		}
	}
	return true
}

// validHeader reports whether every field name is a token and every value
// free of control characters; http.Transport refuses anything else with a
// clear error, so such a request is left to it.
func validHeader(h http.Header) bool {
	for k, vv := range h {
		if !IsToken(k) {
			return false
		}
		for _, v := range vv {
			if !ValidText(v) {
				return false
			}
		}
	}
	return true
}

// RoundTrip sends req, which Carries must have accepted, on an idle
// connection (or a new one) and returns the answer with a body that gives
// the connection back once read to its end.
//
// An idle connection the instance closed is found before use (it is
// readable: EOF) and dropped. One that the instance closes just as the
// request goes out answers nothing; the request, replayable by
// construction, is then sent once more on a new connection, as
// http.Transport does, and never more than once.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	p := t.pool(req.URL.Host)
	if c := p.get(); c != nil {
		resp, err := c.roundTrip(ctx, req)
		if err == nil || c.nread != c.sentAt || ctx.Err() != nil || !closedByPeer(err) {
			return resp, err
		}
	}
	c, err := t.dial(ctx, p)
	if err != nil {
		return nil, err
	}
	return c.roundTrip(ctx, req)
}

// closedByPeer reports an error that a connection the peer closed gives:
// end of stream, reset, broken pipe. A timeout is not one (the instance
// may be working on the request).
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// CloseIdleConnections closes every idle connection.
func (t *Transport) CloseIdleConnections() {
	t.pools.Range(func(_, p any) bool {
		p.(*pool).closeIdle(false)
		return true
	})
}

// CloseIdleTo closes addr's idle connections, stops pooling for it, and
// says how many were closed. Connections in use are the caller's to close.
func (t *Transport) CloseIdleTo(addr string) int {
	if p, ok := t.pools.LoadAndDelete(addr); ok {
		return p.(*pool).closeIdle(true)
	}
	return 0
}

func (t *Transport) pool(addr string) *pool {
	if p, ok := t.pools.Load(addr); ok {
		return p.(*pool)
	}
	p, _ := t.pools.LoadOrStore(addr, &pool{t: t, addr: addr})
	return p.(*pool)
}

// instanceError names the instance in an error about its answer.
func instanceError(addr string, err error) error {
	return fmt.Errorf("instance %s: %w", addr, err)
}
