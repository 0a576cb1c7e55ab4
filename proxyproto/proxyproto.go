// Package proxyproto reads the PROXY protocol header (HAProxy's, versions 1
// and 2) that an L4 load balancer puts in front of a connection, so that
// the server sees the client's address instead of the balancer's.
//
// Only peers the operator trusts may send one: the header is read from a
// trusted peer when it comes (a LOCAL or UNKNOWN one keeps the peer's own
// address), and a connection from any other peer that starts with a header
// is refused (closed), since anyone could claim any address with it. A
// connection without one is served as it is, so health checks and direct
// clients keep working.
//
// The header is read on the connection's goroutine, on its first
// RemoteAddr or Read (http.Server asks for RemoteAddr first), never in
// Accept: a slow peer holds up no one else.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	sigV1 = []byte("PROXY ")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

const (
	maxV1 = 107 // the spec's bound on a v1 line, CRLF included
	// maxV2 bounds a v2 header's address and TLV part. The spec allows
	// 64 KiB; load balancers send tens of bytes, a few hundred with TLVs.
	maxV2 = 4096
)

// ErrUntrusted is the refusal of a header from a peer not trusted to send one.
var ErrUntrusted = errors.New("proxyproto: PROXY header from a peer not in trusted_proxies")

// Listener reads PROXY headers on the connections it accepts.
type Listener struct {
	net.Listener
	// Trusted says whether a peer may send a header. nil: no one.
	Trusted func(netip.Addr) bool
	// Timeout bounds reading the header (and telling whether there is
	// one). Default 5s.
	Timeout time.Duration
	// OnRefuse is told of every refused connection, with the peer and
	// why. Default nil.
	OnRefuse func(peer net.Addr, err error)
}

// Accept wraps the next connection.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	trusted := false
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil && l.Trusted != nil {
		trusted = l.Trusted(ap.Addr().Unmap())
	}
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Conn{Conn: c, trusted: trusted, timeout: timeout, onRefuse: l.OnRefuse}, nil
}

// Conn is a connection whose PROXY header (if any) is read first.
type Conn struct {
	net.Conn
	trusted  bool
	timeout  time.Duration
	onRefuse func(net.Addr, error)

	once   sync.Once
	remote net.Addr // the client's, from the header; nil: the peer's
	rest   []byte   // bytes read past the header
	err    error    // the header was refused or unreadable
}

// RemoteAddr is the client's address from the header, else the peer's.
func (c *Conn) RemoteAddr() net.Addr {
	c.once.Do(c.readHeader)
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// Peer is the address of the peer itself (the balancer, when it sends a
// header), known without reading anything.
func (c *Conn) Peer() net.Addr { return c.Conn.RemoteAddr() }

// MaySendHeader reports whether the peer is trusted to send a header, so
// that the client's address is known only once it is read.
func (c *Conn) MaySendHeader() bool { return c.trusted }

// Read returns what follows the header. A refused header fails every read.
func (c *Conn) Read(p []byte) (int, error) {
	c.once.Do(c.readHeader)
	if c.err != nil {
		return 0, c.err
	}
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *Conn) readHeader() {
	c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	defer c.Conn.SetReadDeadline(time.Time{})
	remote, rest, err := parse(c.Conn, c.trusted)
	c.remote, c.rest, c.err = remote, rest, err
	if err != nil {
		if c.onRefuse != nil {
			c.onRefuse(c.Conn.RemoteAddr(), err)
		}
		c.Conn.Close()
	}
}

// parse reads from r until it can tell whether a header starts the
// stream, reads it whole if so, and returns the client address it names
// (nil for none, LOCAL or UNKNOWN) and the bytes read past it.
func parse(r net.Conn, trusted bool) (net.Addr, []byte, error) {
	buf := make([]byte, 0, 256)
	// Read until the bytes so far match neither signature, or one whole.
	for {
		v1 := bytes.HasPrefix(sigV1, buf) || bytes.HasPrefix(buf, sigV1)
		v2 := bytes.HasPrefix(sigV2, buf) || bytes.HasPrefix(buf, sigV2)
		switch {
		case !v1 && !v2:
			return nil, buf, nil // no header: the bytes are the client's
		case bytes.HasPrefix(buf, sigV1) || bytes.HasPrefix(buf, sigV2):
			if !trusted {
				return nil, nil, ErrUntrusted
			}
			if v1 {
				return parseV1(r, buf)
			}
			return parseV2(r, buf)
		}
		var err error
		if buf, err = readMore(r, buf); err != nil {
			if len(buf) == 0 {
				return nil, nil, err // nothing at all: the server sees the same
			}
			return nil, buf, err
		}
	}
}

func readMore(r net.Conn, buf []byte) ([]byte, error) {
	if len(buf) == cap(buf) {
		buf = append(buf, 0)[:len(buf)]
	}
	n, err := r.Read(buf[len(buf):cap(buf)])
	buf = buf[:len(buf)+n]
	if n > 0 {
		return buf, nil
	}
	if err == nil {
		err = errors.New("proxyproto: empty read")
	}
	return buf, err
}

func parseV1(r net.Conn, buf []byte) (net.Addr, []byte, error) {
	for {
		if i := bytes.Index(buf, []byte("\r\n")); i >= 0 {
			addr, err := v1Line(string(buf[:i]))
			if err != nil {
				return nil, nil, err
			}
			return addr, buf[i+2:], nil
		}
		if len(buf) >= maxV1 {
			return nil, nil, fmt.Errorf("proxyproto: v1 header longer than %d bytes", maxV1)
		}
		var err error
		if buf, err = readMore(r, buf); err != nil {
			return nil, nil, fmt.Errorf("proxyproto: v1 header cut short: %w", err)
		}
	}
}

// v1Line reads "PROXY TCP4 1.2.3.4 5.6.7.8 1234 80" (or UNKNOWN ...).
func v1Line(line string) (net.Addr, error) {
	f := strings.Split(line, " ")
	if len(f) >= 2 && f[1] == "UNKNOWN" {
		return nil, nil
	}
	if len(f) != 6 || (f[1] != "TCP4" && f[1] != "TCP6") {
		return nil, fmt.Errorf("proxyproto: malformed v1 header %q", line)
	}
	src, err := netip.ParseAddr(f[2])
	if err != nil || src.Zone() != "" || (f[1] == "TCP4") != src.Is4() {
		return nil, fmt.Errorf("proxyproto: v1 source address %q is not an %s address", f[2], f[1])
	}
	if _, err := netip.ParseAddr(f[3]); err != nil {
		return nil, fmt.Errorf("proxyproto: v1 destination address %q: %v", f[3], err)
	}
	port, err := strconv.ParseUint(f[4], 10, 16)
	if err != nil || (len(f[4]) > 1 && f[4][0] == '0') {
		return nil, fmt.Errorf("proxyproto: v1 source port %q", f[4])
	}
	if _, err := strconv.ParseUint(f[5], 10, 16); err != nil {
		return nil, fmt.Errorf("proxyproto: v1 destination port %q", f[5])
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, uint16(port))), nil
}

func parseV2(r net.Conn, buf []byte) (net.Addr, []byte, error) {
	for len(buf) < 16 {
		var err error
		if buf, err = readMore(r, buf); err != nil {
			return nil, nil, fmt.Errorf("proxyproto: v2 header cut short: %w", err)
		}
	}
	verCmd, famProto := buf[12], buf[13]
	n := int(binary.BigEndian.Uint16(buf[14:16]))
	if verCmd>>4 != 2 {
		return nil, nil, fmt.Errorf("proxyproto: v2 header with version %d", verCmd>>4)
	}
	if n > maxV2 {
		return nil, nil, fmt.Errorf("proxyproto: v2 header of %d bytes, over the %d-byte bound", n, maxV2)
	}
	for len(buf) < 16+n {
		var err error
		if buf, err = readMore(r, buf); err != nil {
			return nil, nil, fmt.Errorf("proxyproto: v2 header cut short: %w", err)
		}
	}
	body, rest := buf[16:16+n], buf[16+n:]
	switch verCmd & 0xf {
	case 0: // LOCAL: the balancer's own connection (a health check)
		return nil, rest, nil
	case 1: // PROXY
	default:
		return nil, nil, fmt.Errorf("proxyproto: v2 command %d", verCmd&0xf)
	}
	var src netip.Addr
	var port uint16
	switch famProto {
	case 0x11, 0x12: // TCP or UDP over IPv4
		if n < 12 {
			return nil, nil, errors.New("proxyproto: v2 IPv4 addresses cut short")
		}
		src = netip.AddrFrom4([4]byte(body[0:4]))
		port = binary.BigEndian.Uint16(body[8:10])
	case 0x21, 0x22: // over IPv6
		if n < 36 {
			return nil, nil, errors.New("proxyproto: v2 IPv6 addresses cut short")
		}
		src = netip.AddrFrom16([16]byte(body[0:16]))
		port = binary.BigEndian.Uint16(body[32:34])
	default: // UNSPEC or unix sockets: no address to use
		return nil, rest, nil
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, port)), rest, nil
}
