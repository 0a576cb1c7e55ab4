package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"time"
)

// firstWait is how long an answer is waited for before the request's
// context is watched (see conn.watch).
const firstWait = 50 * time.Millisecond

// aLongTimeAgo is a deadline in the past: setting it makes a blocked read
// or write return at once.
var aLongTimeAgo = time.Unix(1, 0)

// noLimit is conn.limit while a body is read.
const noLimit = math.MaxInt64

// conn is one upstream connection with its buffers, reused across
// requests, and the state of the one request it carries at a time.
type conn struct {
	t  *Transport
	p  *pool
	nc net.Conn
	br *bufio.Reader
	bw *bufio.Writer
	// nread counts bytes read; sentAt is its value when the request went
	// out, which tells "answered nothing" from "broke mid-answer".
	nread, sentAt int64
	// limit is what the head being read may still take (Options.MaxHeaderBytes
	// per head), noLimit during a body.
	limit  int64
	idleAt time.Time
	peek   peekState

	// The request under way.
	ctx      context.Context
	stop     func() bool // ends the context watch; false if it already fired
	watching bool
	poison   func() // the watch's callback, bound once per connection
}

func (t *Transport) dial(ctx context.Context, p *pool) (*conn, error) {
	nc, err := t.o.Dial(ctx, p.addr)
	if err != nil {
		return nil, err
	}
	c := &conn{t: t, p: p, nc: nc}
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.bw = bufio.NewWriterSize(nc, 4<<10)
	c.poison = func() { c.nc.SetDeadline(aLongTimeAgo) }
	c.bind()
	return c, nil
}

// Read is the bufio.Reader's source: it counts, and stops a head at its
// limit, as http.Transport's persistConn does.
func (c *conn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, ErrHeadTooLarge
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.nc.Read(p)
	c.nread += int64(n)
	c.limit -= int64(n)
	return n, err
}

// roundTrip sends req and reads the final answer's head. On error the
// connection is closed.
func (c *conn) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	c.ctx, c.stop, c.watching = ctx, noStop, false
	c.sentAt = c.nread
	if err := writeRequest(c.bw, req); err != nil {
		return c.fail(err)
	}
	start := time.Now()
	c.limit = c.t.o.MaxHeaderBytes
	if err := c.awaitAnswer(start); err != nil {
		return c.fail(err)
	}
	resp, length, err := c.readFinalHead(req, start)
	if err != nil {
		return c.fail(err)
	}
	return c.respond(req, resp, length)
}

// fail closes the connection after err: whatever it holds is lost.
func (c *conn) fail(err error) (*http.Response, error) {
	c.stop()
	c.nc.Close()
	return nil, err
}

// watch makes a client gone (or a drain timeout) unblock this request's
// reads wherever they wait. Registering with ctx costs five allocations,
// and most answers come whole within a few milliseconds, so the watch is
// set up only for an answer that is slow to start, that follows a 1xx, or
// whose body is still to come; until then a departure is noticed at the
// first-wait deadline, at most firstWait late. (The request's head is
// written into an idle connection's empty send buffer: that write does not
// block.)
func (c *conn) watch() error {
	if c.watching || c.ctx.Done() == nil {
		return nil
	}
	c.watching = true
	c.stop = context.AfterFunc(c.ctx, c.poison)
	return c.ctx.Err()
}

// noStop stands for "no watch registered"; it reports true, as a stopped
// watch that had not fired does.
func noStop() bool { return true }

// awaitAnswer waits for the answer's first byte: firstWait unwatched, then
// up to the header timeout with the context watched.
func (c *conn) awaitAnswer(start time.Time) error {
	timeout := c.t.o.HeaderTimeout
	c.nc.SetReadDeadline(start.Add(min(timeout, firstWait)))
	if _, err := c.br.Peek(1); err != nil {
		if !errors.Is(err, os.ErrDeadlineExceeded) || timeout <= firstWait {
			return err
		}
		if err := c.watch(); err != nil {
			return err
		}
		c.nc.SetReadDeadline(start.Add(timeout))
		if _, err := c.br.Peek(1); err != nil {
			return err
		}
	}
	if headEnd(peekBuffered(c.br)) <= 0 {
		// The head needs more reads: they get the whole header timeout.
		c.nc.SetReadDeadline(start.Add(timeout))
		return c.watch()
	}
	return nil
}

// readFinalHead reads heads until the final one, passing each 1xx to the
// request's trace (ReverseProxy forwards them to the client). Each head
// may take Options.MaxHeaderBytes; all of them together, the header
// timeout. A 101 ends the exchange with an error: the request asked for no
// upgrade (Carries refuses those), so the instance is broken, and what it
// sends next is not HTTP.
func (c *conn) readFinalHead(req *http.Request, start time.Time) (*http.Response, int64, error) {
	for n := 0; ; n++ {
		resp, length, err := c.readHead(req)
		if err != nil {
			if c.limit <= 0 {
				err = fmt.Errorf("%w (%d bytes; upstream.max_response_header_bytes)", ErrHeadTooLarge, c.t.o.MaxHeaderBytes)
			}
			return nil, 0, instanceError(c.p.addr, err)
		}
		code := resp.StatusCode
		if code == http.StatusSwitchingProtocols {
			return nil, 0, instanceError(c.p.addr, errors.New("101 Switching Protocols answers a request that asked for no upgrade"))
		}
		if code < 100 || code >= 200 {
			c.limit = noLimit
			return resp, length, nil
		}
		if n == c.t.o.Max1xx {
			return nil, 0, instanceError(c.p.addr, fmt.Errorf("%w (more than %d)", ErrTooMany1xx, c.t.o.Max1xx))
		}
		if trace := httptrace.ContextClientTrace(c.ctx); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, 0, err
			}
		}
		// The final answer may come long after a 1xx: wait for it as long
		// as the header timeout allows, the context watched.
		if err := c.watch(); err != nil {
			return nil, 0, err
		}
		c.nc.SetReadDeadline(start.Add(c.t.o.HeaderTimeout))
		// The next head may take the whole limit, counting what of it the
		// last read already buffered.
		c.limit = c.t.o.MaxHeaderBytes - int64(c.br.Buffered())
	}
}

// readHead reads one head: the lean parser for the common shape, and
// http.ReadResponse, the reference, for every other. length is a lean
// answer's body length, -1 for ReadResponse's (its Body knows).
func (c *conn) readHead(req *http.Request) (*http.Response, int64, error) {
	lean, ok, err := parseLeanHead(c.br, req)
	if err != nil {
		return nil, 0, err
	}
	if ok {
		return lean.resp, lean.length, nil
	}
	resp, err := http.ReadResponse(c.br, req)
	return resp, -1, err
}

// respond hands the answer over with a body that gives the connection back
// once read to its end; a bodiless answer gives it back at once.
func (c *conn) respond(req *http.Request, resp *http.Response, length int64) (*http.Response, error) {
	c.nc.SetReadDeadline(time.Time{})
	// A cancel that fired before the line above had its deadline cleared by
	// it, and one that came while nothing watched is only in ctx.
	if err := c.ctx.Err(); err != nil {
		return c.fail(err)
	}
	keep := !resp.Close && !req.Close
	if resp.Body == http.NoBody || length == 0 {
		resp.Body = http.NoBody
		c.release(true, keep)
		return resp, nil
	}
	if length < 0 || length > int64(c.br.Buffered()) {
		// Reads of the body are still to come.
		if err := c.watch(); err != nil {
			return c.fail(err)
		}
	}
	b := &body{c: c, left: length, keep: keep}
	if length < 0 {
		b.std = resp.Body
	}
	resp.Body = b
	return resp, nil
}

// release ends the request: the connection goes back to the pool when the
// answer was read to its end (eof), both sides allow keep-alive, nothing
// beyond the answer is buffered, and the context watch did not fire (its
// deadline poisoned the connection). Otherwise it is closed.
func (c *conn) release(eof, keep bool) {
	stopped := c.stop()
	c.ctx = nil
	if stopped && eof && keep && c.br.Buffered() == 0 {
		c.p.put(c)
		return
	}
	c.nc.Close()
}

// peekBuffered is what br holds, without reading.
func peekBuffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}
