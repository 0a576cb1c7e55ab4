package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The fast path carries the requests that make up nearly all proxied
// traffic: plain-http instance, no request body, idempotent method, no
// upgrade. It writes the request and reads the answer on the caller's own
// goroutine. http.Transport instead hands every request to a per-connection
// writer goroutine and the answer back from a reader goroutine that is
// always parked in a read; on a loopback benchmark those hand-offs, their
// channels and the extra read syscall were the largest share of canaryd's
// own CPU per request (docs/benchmarks.md). Everything else (bodies, which
// need the request written while the answer is read; upgrades; https; POST)
// stays on http.Transport, which is also the reference the fast path is
// tested against.

// max1xx bounds the informational answers skipped before the final one, as
// http.Transport does, so an instance cannot keep canaryd reading forever.
const max1xx = 5

// aLongTimeAgo is a deadline in the past: setting it makes a blocked read
// or write return at once.
var aLongTimeAgo = time.Unix(1, 0)

// h1Pool holds the idle keep-alive connections to one address, most recently
// used on top (warm caches, and the cold ones at the bottom age out).
type h1Pool struct {
	t    *Transport
	addr string

	mu    sync.Mutex // held to push or pop one connection, never across I/O
	idle  []*h1Conn
	sweep *time.Timer // armed while idle is not empty
	gone  bool        // the address was closed (CloseConnsTo); stop pooling
}

// h1Conn is one upstream connection with its buffers, reused across
// requests.
type h1Conn struct {
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	nread  int64 // bytes read so far; tells "answered nothing" from "broke mid-answer"
	idleAt time.Time
}

func (c *h1Conn) Read(p []byte) (int, error) {
	n, err := c.conn.Read(p)
	c.nread += int64(n)
	return n, err
}

// fastPath says whether req can take the fast path. Anything it cannot
// carry exactly as http.Transport would goes to http.Transport.
func fastPath(req *http.Request) bool {
	u := req.URL
	if u.Scheme != "http" || u.Opaque != "" || u.User != nil || req.ContentLength != 0 ||
		(req.Body != nil && req.Body != http.NoBody) || req.Close || !replayable(req) {
		return false
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
		if !isToken(k) {
			return false
		}
		for _, v := range vv {
			if !validText(v) {
				return false
			}
		}
	}
	return true
}

func (t *Transport) pool(addr string) *h1Pool {
	if p, ok := t.pools.Load(addr); ok {
		return p.(*h1Pool)
	}
	p, _ := t.pools.LoadOrStore(addr, &h1Pool{t: t, addr: addr})
	return p.(*h1Pool)
}

func (p *h1Pool) get() *h1Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return c
}

// put keeps c for the next request, or closes it when the pool is full or
// the address has been closed.
func (p *h1Pool) put(c *h1Conn) {
	c.idleAt = time.Now()
	p.mu.Lock()
	if p.gone || len(p.idle) >= p.t.maxIdle {
		p.mu.Unlock()
		c.conn.Close()
		return
	}
	p.idle = append(p.idle, c)
	if p.sweep == nil {
		p.sweep = time.AfterFunc(p.t.idleTimeout, p.expire)
	}
	p.mu.Unlock()
}

// expire closes the connections idle for longer than the idle timeout (the
// bottom of the stack) and rearms for the next one to expire.
func (p *h1Pool) expire() {
	now := time.Now()
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleAt) >= p.t.idleTimeout {
		p.idle[n].conn.Close()
		n++
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	if len(p.idle) > 0 {
		p.sweep.Reset(p.t.idleTimeout - now.Sub(p.idle[0].idleAt))
	} else {
		p.sweep = nil
	}
	p.mu.Unlock()
}

// closeIdle closes every idle connection and says how many; gone also
// stops pooling for good.
func (p *h1Pool) closeIdle(gone bool) int {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	p.gone = p.gone || gone
	p.mu.Unlock()
	for _, c := range idle {
		c.conn.Close()
	}
	return len(idle)
}

func (t *Transport) dialH1(ctx context.Context, p *h1Pool) (*h1Conn, error) {
	conn, err := t.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	c := &h1Conn{conn: t.track(conn, p.addr)}
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.bw = bufio.NewWriterSize(c.conn, 4<<10)
	return c, nil
}

// roundTripH1 sends req on a pooled connection (or a new one) and returns
// the answer with a body that gives the connection back once read to its
// end. A pooled connection the instance has meanwhile closed answers
// nothing; the request (replayable by construction) then goes once more on
// a new connection, as http.Transport does.
func (t *Transport) roundTripH1(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	p := t.pool(req.URL.Host)
	for {
		c, reused := p.get(), true
		if c == nil {
			var err error
			if c, err = t.dialH1(ctx, p); err != nil {
				return nil, err
			}
			reused = false
		}
		before := c.nread
		resp, err := t.exchange(ctx, c, p, req)
		if err == nil {
			return resp, nil
		}
		if !reused || c.nread != before || ctx.Err() != nil || !closedByPeer(err) {
			return nil, err
		}
	}
}

// closedByPeer reports an error that an idle connection the peer closed
// gives: end of stream, reset, broken pipe. A timeout is not one (the
// instance may be working on the request).
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// exchange writes req on c and reads the final answer's head. On error c
// is closed.
func (t *Transport) exchange(ctx context.Context, c *h1Conn, p *h1Pool, req *http.Request) (*http.Response, error) {
	// A client gone (or a drain timeout) must unblock this request's reads
	// wherever they wait. Registering with ctx costs five allocations, and
	// most answers come whole within a few milliseconds, so the watch is
	// set up only for an answer that is slow to start or whose body is
	// still to come; until then a departure is noticed at the first-wait
	// deadline, at most firstWait late. (The request's head is written
	// into an idle connection's empty send buffer: that write does not
	// block.)
	stop, watching := noStop, false
	watch := func() error {
		if watching || ctx.Done() == nil {
			return nil
		}
		watching = true
		stop = context.AfterFunc(ctx, func() { c.conn.SetDeadline(aLongTimeAgo) })
		return ctx.Err()
	}
	fail := func(err error) (*http.Response, error) {
		stop()
		c.conn.Close()
		return nil, err
	}
	if err := writeRequest(c.bw, req); err != nil {
		return fail(err)
	}
	start := time.Now()
	c.conn.SetReadDeadline(start.Add(min(t.headerTimeout, firstWait)))
	if _, err := c.br.Peek(1); err != nil {
		if !errors.Is(err, os.ErrDeadlineExceeded) || t.headerTimeout <= firstWait {
			return fail(err)
		}
		if err := watch(); err != nil {
			return fail(err)
		}
		c.conn.SetReadDeadline(start.Add(t.headerTimeout))
		if _, err := c.br.Peek(1); err != nil {
			return fail(err)
		}
	}
	if headEnd(peekBuffered(c.br)) <= 0 {
		// The head needs more reads: they get the whole header timeout.
		c.conn.SetReadDeadline(start.Add(t.headerTimeout))
	}
	var resp *http.Response
	length := int64(-1) // of a lean answer's body
	for n := 0; ; n++ {
		lean, ok, err := parseLeanHead(c.br, req)
		if err != nil {
			return fail(err)
		}
		if ok {
			resp, length = lean.resp, lean.length
			break
		}
		if resp, err = http.ReadResponse(c.br, req); err != nil {
			return fail(err)
		}
		code := resp.StatusCode
		if code < 100 || code >= 200 || code == http.StatusSwitchingProtocols {
			break
		}
		if n == max1xx {
			return fail(fmt.Errorf("proxy: instance %s sent too many 1xx answers", p.addr))
		}
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
		}
	}
	c.conn.SetReadDeadline(time.Time{})
	// A cancel that fired before the line above had its deadline cleared by
	// it, and one that came while nothing watched is only in ctx.
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	empty := resp.Body == http.NoBody || length == 0
	if !empty && (length < 0 || length > int64(c.br.Buffered())) {
		// Reads of the body are still to come.
		if err := watch(); err != nil {
			return fail(err)
		}
	}
	b := &h1Body{c: c, p: p, body: resp.Body, left: length, stop: stop, keep: !resp.Close}
	if empty {
		resp.Body = http.NoBody
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// firstWait is how long an answer is waited for before the request's
// context is watched (see exchange).
const firstWait = 50 * time.Millisecond

// noStop stands for "no watch registered"; stop reports true, as a stopped
// watch that had not fired does.
func noStop() bool { return true }

// peekBuffered is what br holds, without reading.
func peekBuffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// writeRequest writes req's head as http.Request.Write would for a bodiless
// request; fastPath has checked that it is one and that its fields are
// valid. Field order follows the map, which HTTP does not care about.
func writeRequest(w *bufio.Writer, req *http.Request) error {
	w.WriteString(req.Method)
	w.WriteByte(' ')
	path := req.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	w.WriteString(path)
	if req.URL.ForceQuery || req.URL.RawQuery != "" {
		w.WriteByte('?')
		w.WriteString(req.URL.RawQuery)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	// ReverseProxy sets an empty User-Agent to send none; a missing one
	// gets Go's default, as from http.Transport.
	if ua, ok := req.Header["User-Agent"]; !ok {
		w.WriteString("User-Agent: Go-http-client/1.1\r\n")
	} else if len(ua) > 0 && ua[0] != "" {
		w.WriteString("User-Agent: ")
		w.WriteString(ua[0])
		w.WriteString("\r\n")
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		for _, v := range vv {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(strings.Trim(v, " \t"))
			w.WriteString("\r\n")
		}
	}
	switch req.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		w.WriteString("Content-Length: 0\r\n")
	}
	w.WriteString("\r\n")
	return w.Flush()
}

// h1Body is the answer's body. Read to its end on a connection that stays
// open, it gives the connection back to the pool; closed early or broken,
// it closes the connection (the rest of the answer is still on it).
type h1Body struct {
	c    *h1Conn
	p    *h1Pool
	body io.ReadCloser // from http.ReadResponse; nil for a lean answer
	left int64         // a lean answer's bytes still to read
	stop func() bool
	keep bool
	done bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if b.body != nil {
		n, err := b.body.Read(p)
		if err != nil {
			b.finish(err == io.EOF)
		}
		return n, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.c.br.Read(p)
	b.left -= int64(n)
	if b.left == 0 {
		b.finish(true)
		return n, io.EOF
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.finish(false)
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *h1Body) finish(eof bool) {
	b.done = true
	// stop reports false when the cancel already fired: the connection's
	// deadline is poisoned, so it cannot be reused.
	if b.stop() && eof && b.keep {
		b.p.put(b.c)
		return
	}
	b.c.conn.Close()
}
