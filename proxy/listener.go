package proxy

import (
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"time"
)

// Listener wraps the proxy's listener so that its connections waste fewer
// syscalls and wake the client less often. Two yields to the other
// goroutines do it; yielding is always safe, as the read or write that
// follows is an ordinary one.
//
// Before reading the next request: after http.Server writes an answer on a
// keep-alive connection it reads at once for the next request, which the
// client, still reading the answer, has not sent. The read fails (EAGAIN)
// and only then does the goroutine wait. Yielding first gives the client
// the time to send, and the read then usually finds the request.
//
// Before writing an answer: answers written one at a time as each is ready
// find the client asleep and wake it each time (an inter-processor
// interrupt when it runs on another core). Yielding first lets the other
// goroutines that are ready reach their own writes, so answers leave in
// bursts and one wake-up serves several.
//
// It also bounds slow readers: with WriteTimeout set, a write that the
// client does not take in time fails and the connection closes.
type Listener struct {
	net.Listener
	// WriteTimeout is the longest a write may wait for the client to read
	// (server.client_write_timeout). To keep a deadline update off most
	// writes, a write that finds more than half of it still ahead keeps
	// the deadline it has: a stalled client is cut after between half and
	// all of WriteTimeout. Default 0: no bound.
	WriteTimeout time.Duration
}

// Accept returns the next connection, wrapped when it is a TCP one.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		return &yieldConn{TCPConn: tc, timeout: l.WriteTimeout}, nil
	}
	return c, err
}

type yieldConn struct {
	*net.TCPConn
	wrote   atomic.Bool // an answer went out since the last read
	timeout time.Duration
	// deadline is the write deadline set last, by anyone (Unix ns; 0:
	// none); own says beforeWrite set it (the slow-reader bound), not
	// another layer.
	deadline atomic.Int64
	own      atomic.Bool
	arms     atomic.Int64 // times beforeWrite set the bound (tests)
}

// SetWriteDeadline and SetDeadline note the deadline that others set (the
// HTTP/2 server's write_byte_timeout, the TLS handshake's), so that
// beforeWrite keeps it while it is the stricter. Clearing the write
// deadline leaves the slow-reader bound in place when that is what is set:
// "no deadline" from another layer means none of its own, and http.Server
// clears it after every answer, which would otherwise cost two timer
// updates a request to set the bound again at the next write.
func (c *yieldConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() && c.timeout > 0 && c.own.Load() {
		return nil
	}
	c.own.Store(false)
	c.deadline.Store(unixNano(t))
	return c.TCPConn.SetWriteDeadline(t)
}

func (c *yieldConn) SetDeadline(t time.Time) error {
	if t.IsZero() && c.timeout > 0 && c.own.Load() {
		return c.TCPConn.SetReadDeadline(t)
	}
	c.own.Store(false)
	c.deadline.Store(unixNano(t))
	return c.TCPConn.SetDeadline(t)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func (c *yieldConn) Read(p []byte) (int, error) {
	if c.wrote.Load() && c.wrote.Swap(false) {
		runtime.Gosched()
	}
	return c.TCPConn.Read(p)
}

func (c *yieldConn) Write(p []byte) (int, error) {
	c.beforeWrite()
	return c.TCPConn.Write(p)
}

// ReadFrom keeps the TCP connection's sendfile path for the server.
func (c *yieldConn) ReadFrom(r io.Reader) (int64, error) {
	c.beforeWrite()
	return c.TCPConn.ReadFrom(r)
}

// beforeWrite yields before every write, with the flag set first. The
// variant that yielded only before an answer's first write and set the flag
// after had the same syscalls but a higher p99 (12 against 9 ms), so the
// simpler form stays; see docs/benchmarks.md.
//
// With a timeout it keeps the slow-reader bound: a write may wait at most
// timeout. The bound is set when there is no deadline, when its own has
// less than half of timeout left (so that it is set at most once per half
// timeout, not per write), and when another layer's deadline is further
// away than the bound; another layer's stricter deadline stays.
func (c *yieldConn) beforeWrite() {
	c.wrote.Store(true)
	if c.timeout > 0 {
		now := time.Now().UnixNano()
		d := c.deadline.Load()
		if d == 0 || (c.own.Load() && d-now < int64(c.timeout/2)) || (!c.own.Load() && d-now > int64(c.timeout)) {
			t := now + int64(c.timeout)
			c.own.Store(true)
			c.deadline.Store(t)
			c.arms.Add(1)
			c.TCPConn.SetWriteDeadline(time.Unix(0, t))
		}
	}
	runtime.Gosched()
}
