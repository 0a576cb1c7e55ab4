package overload

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// ListenerOptions configure NewListener.
type ListenerOptions struct {
	// Max is how many connections may be open at once; MaxPerClient how
	// many from one client address. Both above 0.
	Max, MaxPerClient int
	// Exempt says whether a peer's connections skip the per-client limit
	// (a trusted proxy that sends no PROXY header carries many clients).
	// nil: none is.
	Exempt func(netip.Addr) bool
	// Refused is told of each connection closed over a limit. nil: none.
	Refused Refused
}

// Listener closes the connections over its limits as it accepts them.
// When the listener below reads PROXY headers, a peer trusted to send one
// is counted by the client address in its header, once the connection's
// own goroutine has read it (never in Accept: a slow peer holds up no one
// else); its connection is then closed before anything else is read.
type Listener struct {
	net.Listener
	o       ListenerOptions
	open    atomic.Int64
	clients *counts
}

// NewListener limits ln's connections.
func NewListener(ln net.Listener, o ListenerOptions) *Listener {
	return &Listener{Listener: ln, o: o, clients: newCounts()}
}

// proxied is a connection whose client address comes from a PROXY
// header (proxyproto.Conn): Peer is known at once, RemoteAddr reads the
// header first.
type proxied interface {
	Peer() net.Addr
	MaySendHeader() bool
}

// Open is how many connections are open now.
func (l *Listener) Open() int { return int(l.open.Load()) }

// OpenFrom is how many connections a client has open now (tests).
func (l *Listener) OpenFrom(a netip.Addr) int { return l.clients.of(a) }

// Accept returns the next connection within the limits; the ones over
// them are closed here, without returning to the caller, so a flood
// costs an accept and a close each.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var peer netip.Addr
		pc, isProxied := c.(proxied)
		if isProxied {
			peer = addrOf(pc.Peer())
		} else {
			peer = addrOf(c.RemoteAddr())
		}
		if l.open.Add(1) > int64(l.o.Max) {
			l.open.Add(-1)
			c.Close()
			l.refused(MaxConnections, peer)
			continue
		}
		lc := &conn{Conn: c, l: l}
		switch {
		case isProxied && pc.MaySendHeader():
			lc.state.Store(pending) // counted once the header is read
		case l.exempt(peer):
		case !l.clients.acquire(peer, int32(l.o.MaxPerClient)):
			l.open.Add(-1)
			c.Close()
			l.refused(MaxConnectionsPerClient, peer)
			continue
		default:
			lc.client, lc.counted = peer, true
		}
		return lc, nil
	}
}

func (l *Listener) exempt(a netip.Addr) bool { return l.o.Exempt != nil && l.o.Exempt(a) }

func (l *Listener) refused(lim Limit, a netip.Addr) {
	if l.o.Refused != nil {
		l.o.Refused(lim, a)
	}
}

// A conn's admission states.
const (
	admitted int32 = iota
	pending        // a PROXY header may name the client: counted at first use
	refused        // over the per-client limit once the header was read
)

// conn gives back its counts when closed, once.
type conn struct {
	net.Conn
	l       *Listener
	state   atomic.Int32
	once    sync.Once // the pending admission
	client  netip.Addr
	counted bool // client holds one of the per-client counts
	closed  atomic.Bool
}

// admit counts a pending connection by the client its header named; on
// the connection's goroutine, at its first RemoteAddr or Read.
func (c *conn) admit() {
	if c.state.Load() != pending {
		return
	}
	c.once.Do(func() {
		a := addrOf(c.Conn.RemoteAddr()) // reads the header
		switch {
		case c.l.exempt(a): // no header: the trusted peer itself
		case !c.l.clients.acquire(a, int32(c.l.o.MaxPerClient)):
			c.state.Store(refused)
			c.l.refused(MaxConnectionsPerClient, a)
			c.Conn.Close()
			c.release()
			return
		default:
			c.client, c.counted = a, true
		}
		c.state.Store(admitted)
	})
}

func (c *conn) RemoteAddr() net.Addr {
	c.admit()
	return c.Conn.RemoteAddr()
}

func (c *conn) Read(p []byte) (int, error) {
	c.admit()
	if c.state.Load() == refused {
		return 0, io.EOF // quietly: the server drops it without a log line
	}
	return c.Conn.Read(p)
}

// Close closes the connection and gives back its counts. Another
// goroutine may close it (a shutdown) while its own admits it: the once
// orders the two, and a connection closed first is never admitted.
func (c *conn) Close() error {
	c.once.Do(func() {})
	err := c.Conn.Close()
	c.release()
	return err
}

func (c *conn) release() {
	if c.closed.CompareAndSwap(false, true) {
		c.l.open.Add(-1)
		if c.counted {
			c.l.clients.release(c.client)
		}
	}
}

// CloseWrite and ReadFrom are kept for the server's TCP fast paths
// (sendfile, half-close) when the connection below has them.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}
