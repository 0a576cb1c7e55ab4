package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// v2 builds a v2 header.
func v2(cmd, fam byte, addrs []byte, tlv []byte) []byte {
	b := append([]byte{}, sigV2...)
	b = append(b, 0x20|cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addrs)+len(tlv)))
	return append(append(b, addrs...), tlv...)
}

func v4addrs(src, dst string, sp, dp uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sp)
	return binary.BigEndian.AppendUint16(b, dp)
}

func v6addrs(src, dst string, sp, dp uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sp)
	return binary.BigEndian.AppendUint16(b, dp)
}

// serve accepts one connection on a real loopback listener, reads what
// follows the header, and reports the address and bytes it saw.
type seen struct {
	remote string
	data   string
	err    error
}

func roundTrip(t *testing.T, trusted bool, send []byte, chunk int) seen {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var refused error
	pl := &Listener{Listener: ln, Trusted: func(netip.Addr) bool { return trusted }, Timeout: 2 * time.Second,
		OnRefuse: func(_ net.Addr, err error) { refused = err }}
	out := make(chan seen, 1)
	go func() {
		c, err := pl.Accept()
		if err != nil {
			out <- seen{err: err}
			return
		}
		defer c.Close()
		remote := c.RemoteAddr().String()
		b, err := io.ReadAll(c)
		if refused != nil {
			err = refused
		}
		out <- seen{remote: remote, data: string(b), err: err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// Sent in small pieces, the header is read across several reads.
	for len(send) > 0 {
		n := min(chunk, len(send))
		c.Write(send[:n])
		send = send[n:]
		time.Sleep(time.Millisecond)
	}
	c.(*net.TCPConn).CloseWrite()
	defer c.Close()
	select {
	case s := <-out:
		if s.remote == c.LocalAddr().String() {
			s.remote = "peer"
		}
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("server did not finish")
	}
	return seen{}
}

func TestHeaders(t *testing.T) {
	const req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct {
		name    string
		trusted bool
		send    []byte
		remote  string // "peer": the connection's own address
		data    string
		err     string
	}{
		{"v1 tcp4", true, []byte("PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n" + req), "203.0.113.7:51234", req, ""},
		{"v1 tcp6", true, []byte("PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n" + req), "[2001:db8::7]:40000", req, ""},
		{"v1 unknown", true, []byte("PROXY UNKNOWN\r\n" + req), "peer", req, ""},
		{"v2 tcp4", true, append(v2(1, 0x11, v4addrs("198.51.100.9", "10.0.0.1", 6000, 443), nil), req...), "198.51.100.9:6000", req, ""},
		{"v2 tcp6 with TLVs", true, append(v2(1, 0x21, v6addrs("2001:db8::9", "2001:db8::1", 7000, 443), []byte{0x02, 0, 3, 'a', 'b', 'c'}), req...), "[2001:db8::9]:7000", req, ""},
		{"v2 local", true, append(v2(0, 0x00, nil, nil), req...), "peer", req, ""},
		{"v2 unspec", true, append(v2(1, 0x00, nil, nil), req...), "peer", req, ""},
		{"no header, trusted peer", true, []byte(req), "peer", req, ""},
		{"no header, untrusted peer", false, []byte(req), "peer", req, ""},
		{"POST is not PROXY", false, []byte("POST / HTTP/1.1\r\n\r\n"), "peer", "POST / HTTP/1.1\r\n\r\n", ""},
		{"h2 preface", false, []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "peer", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ""},
		{"TLS hello", false, []byte{0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5}, "peer", "\x16\x03\x01\x00\x05\x01\x02\x03\x04\x05", ""},
		{"v1 from untrusted", false, []byte("PROXY TCP4 1.2.3.4 10.0.0.1 1 2\r\n" + req), "peer", "", "not in trusted_proxies"},
		{"v2 from untrusted", false, append(v2(1, 0x11, v4addrs("1.2.3.4", "10.0.0.1", 1, 2), nil), req...), "peer", "", "not in trusted_proxies"},
		{"v1 garbage", true, []byte("PROXY TCP4 nope\r\n" + req), "peer", "", "malformed v1"},
		{"v1 family mismatch", true, []byte("PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n"), "peer", "", "not an TCP4"},
		{"v1 bad port", true, []byte("PROXY TCP4 1.2.3.4 10.0.0.1 99999 2\r\n"), "peer", "", "source port"},
		{"v1 too long", true, []byte("PROXY TCP4 " + strings.Repeat("1", 200)), "peer", "", "longer than 107"},
		{"v1 cut short", true, []byte("PROXY TCP4 1.2.3.4"), "peer", "", "cut short"},
		{"v2 version 3", true, append([]byte(string(sigV2)), 0x31, 0x11, 0, 0), "peer", "", "version 3"},
		{"v2 over bound", true, append([]byte(string(sigV2)), 0x21, 0x11, 0xff, 0xff), "peer", "", "over the 4096-byte bound"},
		{"v2 ipv4 short", true, v2(1, 0x11, []byte{1, 2, 3}, nil), "peer", "", "cut short"},
		{"v2 cut short", true, append([]byte(string(sigV2)), 0x21, 0x11, 0, 12, 1, 2), "peer", "", "cut short"},
	} {
		for _, chunk := range []int{1 << 16, 1, 5} {
			s := roundTrip(t, tc.trusted, tc.send, chunk)
			if tc.err != "" {
				if s.err == nil || !strings.Contains(s.err.Error(), tc.err) {
					t.Errorf("%s (chunks of %d): err %v, want one with %q", tc.name, chunk, s.err, tc.err)
				}
				if s.data != "" {
					t.Errorf("%s: %q read past a refused header", tc.name, s.data)
				}
				continue
			}
			if s.err != nil || s.remote != tc.remote || s.data != tc.data {
				t.Errorf("%s (chunks of %d): remote %s data %q err %v; want %s %q", tc.name, chunk, s.remote, s.data, s.err, tc.remote, tc.data)
			}
		}
	}
}

// A trusted peer that starts a header and stalls is cut at the timeout,
// not held open.
func TestStalledHeaderTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pl := &Listener{Listener: ln, Trusted: func(netip.Addr) bool { return true }, Timeout: 200 * time.Millisecond}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("PROXY TCP4 1.2."))
	sc, err := pl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = sc.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || time.Since(start) > 3*time.Second {
		t.Fatalf("stalled header: %v after %v, want a timeout near 200ms", err, time.Since(start))
	}
}

type bufConn struct {
	net.Conn
	r *bytes.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// FuzzParse: any byte stream from a trusted peer is parsed without a
// panic, and what it returns past a header, followed by what it left
// unread, is a suffix of the input: no byte is lost or made up.
func FuzzParse(f *testing.F) {
	f.Add([]byte("PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n\r\n"))
	f.Add(v2(1, 0x11, v4addrs("198.51.100.9", "10.0.0.1", 6000, 443), nil))
	f.Add(v2(1, 0x21, v6addrs("2001:db8::9", "2001:db8::1", 7000, 443), []byte{1, 0, 1, 'x'}))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		addr, rest, err := parse(&bufConn{r: r}, true)
		if err != nil {
			return
		}
		unread, _ := io.ReadAll(r)
		if rest = append(rest, unread...); !bytes.HasSuffix(in, rest) {
			t.Fatalf("rest %q is not a suffix of the input", rest)
		}
		if addr != nil {
			if _, err := netip.ParseAddrPort(addr.String()); err != nil {
				t.Fatalf("address %v: %v", addr, err)
			}
		}
	})
}
