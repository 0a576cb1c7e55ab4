package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// streamSeeds are whole upstream byte streams: the instance's bytes for
// each of up to three requests on one connection, separated by "|".
var streamSeeds = []struct {
	segments string
	heads    uint8 // bit k: request k is a HEAD
}{
	{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok|HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes|HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 0},
	{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!|HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 0},
	{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!|HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 0},
	{"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!|HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 0},
	{"HTTP/1.1 304 Not Modified\r\n\r\n|HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 0},
	{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!|HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 1},
	{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n|HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 1},
	{"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!|x", 0},
	{"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok|HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 0},
	{strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 6) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok|", 0},
	{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n|HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 0},
	{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok|x", 0},
	{"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok|HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 0},
	{"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok|HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 0},
	{"HTTP/1.1 200 OK\r\n\r\nuntil the close", 0},
	{"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n|HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 0},
	{"HTTP/1.1 200 OK\nContent-Length: 2\n\nok|HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 0},
	{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 0},
}

// FuzzUpstreamStream sends up to three requests over one real loopback
// connection to an instance that answers request k with segment k of the
// stream, and holds the fast path to http.ReadResponse, read answer after
// answer from the same bytes:
//   - every answer the fast path returns is the one ReadResponse reads at
//     the same place (status, header, body);
//   - it reuses the connection only after an answer that ReadResponse
//     frames to end exactly where the instance's bytes so far end, on a
//     connection both sides keep open: bytes beyond an answer never become
//     the next request's answer;
//   - on the first request it fails exactly when ReadResponse does (or
//     the answer is a 101, or more than Max1xx 1xx, which it refuses).
func FuzzUpstreamStream(f *testing.F) {
	for _, s := range streamSeeds {
		f.Add(s.segments, s.heads)
	}
	ln := listen(f)
	f.Fuzz(func(t *testing.T, stream string, heads uint8) {
		segs := strings.SplitN(stream, "|", 3)
		checkStream(t, ln, segs, heads)
	})
}

func TestUpstreamStreamSeeds(t *testing.T) {
	ln := listen(t)
	for _, s := range streamSeeds {
		checkStream(t, ln, strings.SplitN(s.segments, "|", 3), s.heads)
	}
}

// listen is the instance's listener, one for all iterations: a fuzzer
// that opened one per input would run out of loopback ports.
func listen(tb testing.TB) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// refAnswer is what ReadResponse makes of the bytes at one place.
type refAnswer struct {
	ok     bool // a final answer was read (its body may still have failed)
	status int
	header http.Header
	body   []byte
	err    error // head or body
	close  bool
	end    int // offset after the answer
}

// reference reads the answer to a request (HEAD or not) at off of data,
// the way http.Transport would, skipping 1xx up to the limit.
func reference(data []byte, off int, head bool) refAnswer {
	r := bytes.NewReader(data[off:])
	br := bufio.NewReader(r)
	method := http.MethodGet
	if head {
		method = http.MethodHead
	}
	req, _ := http.NewRequest(method, "http://x/", nil)
	var a refAnswer
	for n := 0; ; n++ {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			a.err = err
			return a
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			a.err = errors.New("101")
			return a
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			if n == DefaultMax1xx {
				a.err = ErrTooMany1xx
				return a
			}
			continue
		}
		a.ok, a.status, a.header, a.close = true, resp.StatusCode, resp.Header, resp.Close
		a.body, a.err = io.ReadAll(resp.Body)
		a.end = len(data) - r.Len() - br.Buffered()
		return a
	}
}

func checkStream(t *testing.T, ln net.Listener, segs []string, heads uint8) {
	done := make(chan struct{})
	go instanceOfSegments(ln, segs, done)
	defer func() { <-done }()

	dialed := false
	tr := New(Options{
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			if dialed {
				return nil, errors.New("one connection only")
			}
			dialed = true
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err == nil {
				c.(*net.TCPConn).SetLinger(0) // no TIME_WAIT left behind per input
			}
			return c, err
		},
		HeaderTimeout: 500 * time.Millisecond, IdleTimeout: time.Minute, MaxIdlePerHost: 4, MaxHeaderBytes: 1 << 20,
	})
	defer tr.CloseIdleConnections()

	var sent []byte // what the instance had sent when each answer was read
	off := 0
	var prev refAnswer
	for k := range segs {
		sent = append(sent, segs[k]...)
		head := heads&(1<<k) != 0
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		req, _ := http.NewRequest(method, "http://"+ln.Addr().String()+"/", nil)
		resp, err := tr.RoundTrip(req)
		ref := reference(sent, off, head)
		if k == 0 && (err != nil) != !ref.ok {
			t.Fatalf("segments %q: first answer: fast path err %v, ReadResponse's %v", segs, err, ref.err)
		}
		if err != nil {
			return // the connection is gone; later requests would dial again
		}
		body, bodyErr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if k > 0 {
			// The connection was reused (there is only one).
			if prev.close || prev.end != len(sent)-len(segs[k]) {
				t.Fatalf("segments %q: request %d reused the connection after an answer that ended at %d of %d bytes (close %v)",
					segs, k, prev.end, len(sent)-len(segs[k]), prev.close)
			}
		}
		if !ref.ok {
			t.Fatalf("segments %q: request %d: fast path answered %d, ReadResponse failed: %v", segs, k, resp.StatusCode, ref.err)
		}
		if resp.StatusCode != ref.status || !reflect.DeepEqual(resp.Header, ref.header) {
			t.Fatalf("segments %q: request %d: fast path %d %v, ReadResponse %d %v", segs, k, resp.StatusCode, resp.Header, ref.status, ref.header)
		}
		if bodyErr == nil && ref.err == nil && !bytes.Equal(body, ref.body) {
			t.Fatalf("segments %q: request %d: body %q, ReadResponse's %q", segs, k, body, ref.body)
		}
		if bodyErr == nil && ref.err != nil {
			t.Fatalf("segments %q: request %d: fast path read the body %q whole, ReadResponse failed: %v", segs, k, body, ref.err)
		}
		if bodyErr != nil {
			return
		}
		prev, off = ref, ref.end
	}
}

// instanceOfSegments accepts one connection and answers request k with
// segs[k], each in one write. Once it has nothing more to send, or the
// next request is 20 ms late, it ends its side (so that an answer read to
// the close ends) and waits for the client to close.
func instanceOfSegments(ln net.Listener, segs []string, done chan<- struct{}) {
	defer close(done)
	c, err := ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for k, s := range segs {
		if k > 0 {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		}
		if !readHead(br) {
			break
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, s); err != nil {
			return
		}
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, br)
}

// readHead reads one bodiless request's head.
func readHead(br *bufio.Reader) bool {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return false
		}
		if line == "\r\n" {
			return true
		}
	}
}

// BenchmarkIdleCheck is the cost the fast path adds to each reuse of a
// pooled connection: one non-blocking MSG_PEEK on the socket.
func BenchmarkIdleCheck(b *testing.B) {
	ln := listen(b)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	tr := New(Options{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}, MaxHeaderBytes: 1 << 16})
	c, err := tr.dial(context.Background(), tr.pool(ln.Addr().String()))
	if err != nil {
		b.Fatal(err)
	}
	defer c.nc.Close()
	defer (<-accepted).Close()
	b.ReportAllocs()
	for b.Loop() {
		if c.stale() {
			b.Fatal("an idle connection with nothing on it is stale")
		}
	}
}
