package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// serveOnListener runs an http.Server with h on a Listener over loopback.
func serveOnListener(t *testing.T, h http.Handler, idle time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, IdleTimeout: idle, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(Listener{Listener: ln}) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

func dialT(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// Keep-alive, pipelined requests, and a request after a pause all work.
func TestListenerKeepAliveAndPipelining(t *testing.T) {
	addr := serveOnListener(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}), 0)
	c := dialT(t, addr)
	br := bufio.NewReader(c)
	read := func(want string) {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want {
			t.Fatalf("body %q, want %q", b, want)
		}
	}
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n")
	read("/a")
	read("/b")
	read("/c")
	time.Sleep(50 * time.Millisecond)
	io.WriteString(c, "GET /d HTTP/1.1\r\nHost: x\r\n\r\n")
	read("/d")
}

func TestListenerLargeBody(t *testing.T) {
	addr := serveOnListener(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	}), 0)
	const size = 4 << 20
	ct := &http.Transport{}
	defer ct.CloseIdleConnections()
	resp, err := (&http.Client{Transport: ct}).Post("http://"+addr+"/", "application/octet-stream", bytes.NewReader(make([]byte, size)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d <nil>", size); string(b) != want {
		t.Errorf("server read %q, want %q", b, want)
	}
}

// The server still sees a client that goes away.
func TestListenerSeesClientLeave(t *testing.T) {
	gone := make(chan struct{})
	addr := serveOnListener(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		holdUntilGone(r, gone)
	}), 0)
	c := dialT(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context did not end 5s after the client left")
	}
}

// The idle timeout still closes a keep-alive connection after an answer
// (the read that waits for the next request comes after a yield).
func TestListenerIdleTimeout(t *testing.T) {
	addr := serveOnListener(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), 100*time.Millisecond)
	c := dialT(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	start := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the idle timeout: %v, want EOF", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v; the idle timeout is 100ms", d)
	}
}

// Read errors keep the shapes http.Server relies on (a read OpError that
// is a timeout; EOF) and the connection's own methods stay reachable.
func TestListenerConnKeepsTCPBehaviour(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ql := Listener{Listener: ln}
	defer ql.Close()
	peer := dialT(t, ln.Addr().String())
	c, err := ql.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(interface{ CloseWrite() error }); !ok {
		t.Error("the wrapped connection lost CloseWrite (http.Server uses it)")
	}
	buf := make([]byte, 16)
	io.WriteString(peer, "hi")
	if n, err := c.Read(buf); n != 2 || err != nil {
		t.Fatalf("read %d %v", n, err)
	}
	c.Write([]byte("answer"))
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = c.Read(buf)
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" || !oe.Timeout() {
		t.Fatalf("deadline: %v, want a read OpError that is a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	io.ReadFull(peer, make([]byte, len("answer"))) // unread data would turn the close into a reset
	peer.Close()
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("after the peer closed: %v, want EOF", err)
	}
}

// The whole proxy behind Listener: a WebSocket upgrade (a hijacked
// connection) and a plain request.
func TestProxyBehindListener(t *testing.T) {
	ws := wsEcho(t)
	r := newRig(t, Options{}, routeSpec(t, pool{"blue", 10000, []string{ws.URL}}))
	addr := serveOnListener(t, r.srv.Config.Handler, time.Minute)
	c := dialT(t, addr)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	for i := 0; i < 3; i++ {
		msg := strings.Repeat("m", 10*(i+1))
		c.Write(maskedFrame(1, []byte(msg)))
		_, payload, err := readFrame(br)
		if err != nil || string(payload) != msg {
			t.Fatalf("echo %d: %q %v", i, payload, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/plain", nil)
	ct := &http.Transport{}
	defer ct.CloseIdleConnections()
	resp, err = ct.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "want websocket") {
		t.Errorf("plain request: %d %q (the echo backend refuses non-WebSocket requests)", resp.StatusCode, b)
	}
}

// The slow-reader bound is set once, not per answer, although http.Server
// clears the write deadline after each one; it still cuts a client that
// stops reading after such a clear, and another layer's stricter deadline
// is kept until that layer clears it.
func TestListenerWriteBound(t *testing.T) {
	accept := func(t *testing.T, timeout time.Duration) (*yieldConn, net.Conn) {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		peer := dialT(t, ln.Addr().String())
		c, err := Listener{Listener: ln, WriteTimeout: timeout}.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*yieldConn), peer
	}
	// fill writes until the write fails (the peer reads nothing) and
	// returns the error and how long it took.
	fill := func(c net.Conn) (time.Duration, error) {
		start := time.Now()
		buf := make([]byte, 64<<10)
		for range 4096 { // 256 MiB: far past any socket buffer
			if _, err := c.Write(buf); err != nil {
				return time.Since(start), err
			}
		}
		return time.Since(start), nil
	}
	// cut fills c until its write fails and wants a deadline error within
	// limit (a bound far above the deadline: a loaded machine), and the
	// bound set arms times (-1: any).
	cut := func(t *testing.T, c *yieldConn, limit time.Duration, arms int64, want string) {
		t.Helper()
		took, err := fill(c)
		if !errors.Is(err, os.ErrDeadlineExceeded) || took > limit {
			t.Fatalf("%v after %v, want %s", err, took, want)
		}
		if n := c.arms.Load(); arms >= 0 && n != arms {
			t.Errorf("the bound was set %d times, want %d (%s)", n, arms, want)
		}
	}

	t.Run("once for many answers", func(t *testing.T) {
		var conns = make(chan *yieldConn, 1)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				conns <- c.(*yieldConn)
				return ctx
			},
			ReadHeaderTimeout: 5 * time.Second,
		}
		done := make(chan struct{})
		go func() { defer close(done); srv.Serve(Listener{Listener: ln, WriteTimeout: time.Minute}) }()
		defer func() { srv.Close(); <-done }()
		c := dialT(t, ln.Addr().String())
		br := bufio.NewReader(c)
		for i := range 50 {
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("answer %d: %v", i, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if n := (<-conns).arms.Load(); n != 1 {
			t.Errorf("the bound was set %d times for 50 answers, want once", n)
		}
	})

	t.Run("kept through a clear", func(t *testing.T) {
		// A 1s bound: the buffers fill well within its half, so it is set
		// once even on a loaded machine.
		c, _ := accept(t, time.Second)
		c.Write([]byte("x")) // sets the bound
		c.SetWriteDeadline(time.Time{})
		c.SetDeadline(time.Time{})
		cut(t, c, 10*time.Second, 1, "the 1s bound to cut a client that stopped reading")
	})

	t.Run("a stricter deadline stays", func(t *testing.T) {
		c, _ := accept(t, time.Minute)
		c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		cut(t, c, 10*time.Second, 0, "the 100ms deadline, not the minute's bound")
	})

	t.Run("a laxer deadline is bounded", func(t *testing.T) {
		c, _ := accept(t, 300*time.Millisecond)
		c.SetWriteDeadline(time.Now().Add(time.Hour))
		cut(t, c, 5*time.Second, -1, "the 300ms bound over the hour's deadline")
	})

	t.Run("their clear brings the bound back", func(t *testing.T) {
		c, _ := accept(t, 300*time.Millisecond)
		c.SetWriteDeadline(time.Now().Add(time.Millisecond))
		c.SetWriteDeadline(time.Time{}) // theirs: cleared for real
		time.Sleep(5 * time.Millisecond)
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatalf("a write after their deadline was cleared: %v", err)
		}
		if n := c.arms.Load(); n != 1 {
			t.Errorf("the bound was set %d times after their clear, want once", n)
		}
	})
}

// BenchmarkListenerWrite is a 128-byte write on a loopback connection the
// Listener wrapped, without and with a WriteTimeout: the cost of keeping
// the slow-reader deadline (a clock read per write, a deadline set at most
// once per half timeout).
func BenchmarkListenerWrite(b *testing.B) {
	for _, timeout := range []time.Duration{0, time.Minute} {
		b.Run(fmt.Sprintf("timeout=%v", timeout), func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			ql := Listener{Listener: ln, WriteTimeout: timeout}
			peer, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer peer.Close()
			go io.Copy(io.Discard, peer)
			c, err := ql.Accept()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := make([]byte, 128)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
