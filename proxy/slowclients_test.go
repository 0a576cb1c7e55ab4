package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/balancer"
)

// slowRig is a proxy on a real listener with the slow-client bounds, in
// front of one instance that counts the connections it is given and the
// requests that reach its handler.
type slowRig struct {
	addr     string
	conns    atomic.Int64 // connections the instance accepted
	started  chan string  // a request reached the instance: its Content-Type
	rec      *recorder
	instance string
}

func newSlowRig(t *testing.T, opts Options, writeTimeout time.Duration, instance http.HandlerFunc) *slowRig {
	r := &slowRig{started: make(chan string, 16), rec: &recorder{}}
	if instance == nil {
		instance = func(w http.ResponseWriter, req *http.Request) {
			b, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			fmt.Fprintf(w, "got %d bytes", len(b))
		}
	}
	inst := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		select {
		case r.started <- req.Header.Get("Content-Type"):
		default:
		}
		instance(w, req)
	}))
	inst.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			r.conns.Add(1)
		}
	}
	inst.Start()
	t.Cleanup(inst.Close)
	r.instance = inst.URL
	router := balancer.NewRouter()
	if _, err := router.Apply([]balancer.RouteSpec{routeSpec(t, pool{"blue", 10000, []string{inst.URL}})}); err != nil {
		t.Fatal(err)
	}
	tr := NewTransport(TransportOptions{})
	opts.Transport, opts.Observer = tr, r.rec
	srv := &http.Server{Handler: New(router, opts), ReadHeaderTimeout: 5 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(Listener{Listener: ln, WriteTimeout: writeTimeout}) }()
	t.Cleanup(func() { srv.Close(); <-done; tr.CloseIdleConnections() })
	r.addr = ln.Addr().String()
	return r
}

func (r *slowRig) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// status reads an answer's status line (0 when the connection closed
// without one), within 10s.
func status(t *testing.T, c net.Conn) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestStalledBodyGets408(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		buffered   bool
	}{
		{"buffered (a length within max_bytes)", "Content-Length: 100\r\n", true},
		{"streamed (a length over max_bytes)", "Content-Length: 100000\r\n", false},
		{"streamed (chunked)", "Transfer-Encoding: chunked\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSlowRig(t, Options{BodyTimeout: 300 * time.Millisecond, BufferBodyBytes: 1024}, 0, nil)
			c := r.dial(t)
			first := "0123456789"
			if strings.Contains(tc.head, "chunked") {
				first = "a\r\n0123456789\r\n"
			}
			start := time.Now()
			fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\n%s\r\n%s", tc.head, first)
			if got := status(t, c); got != http.StatusRequestTimeout {
				t.Fatalf("a body that stalls got %d; want 408", got)
			}
			if took := time.Since(start); took < 250*time.Millisecond {
				t.Fatalf("408 after %v, before the 300ms timeout", took)
			}
			if tc.buffered && r.conns.Load() != 0 {
				t.Fatalf("a buffered body that never completed took %d upstream connections; want 0", r.conns.Load())
			}
			if !tc.buffered && r.conns.Load() == 0 {
				t.Fatal("a streamed body never reached the instance")
			}
			waitFor(t, "the outcome", func() bool { return len(r.rec.all()) == 1 })
			if o := r.rec.all()[0]; o.Status != http.StatusRequestTimeout {
				t.Fatalf("outcome %d; want 408", o.Status)
			}
		})
	}
}

// A gRPC stream is never cut by the body timeout: it may be quiet between
// messages as long as it likes.
func TestGRPCStreamHasNoBodyTimeout(t *testing.T) {
	r := newSlowRig(t, Options{BodyTimeout: 300 * time.Millisecond, MinBodyRate: 1000, BodyRateGrace: 100 * time.Millisecond, BufferBodyBytes: 1024}, 0, nil)
	c := r.dial(t)
	fmt.Fprintf(c, "POST /svc/Method HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n")
	time.Sleep(1200 * time.Millisecond) // four body timeouts, quiet
	fmt.Fprintf(c, "5\r\nabcde\r\n0\r\n\r\n")
	if s := status(t, c); s != 200 {
		t.Fatalf("a gRPC stream quiet for 1.2s (body timeout 300ms) ended %d; want 200", s)
	}
}

func TestMinBodyRate(t *testing.T) {
	r := newSlowRig(t, Options{BodyTimeout: 10 * time.Second, MinBodyRate: 1000, BodyRateGrace: 200 * time.Millisecond}, 0, nil)
	// 100 bytes a second: under the rate once the grace has passed.
	c := r.dial(t)
	fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
	got := make(chan int, 1)
	go func() { got <- status(t, c) }()
	start := time.Now()
	for i := 0; i < 50; i++ {
		if _, err := fmt.Fprintf(c, "a\r\n0123456789\r\n"); err != nil {
			break
		}
		select {
		case s := <-got:
			if s != http.StatusRequestTimeout {
				t.Fatalf("a 100 B/s upload got %d; want 408", s)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Fatalf("cut after %v", took)
			}
			goto fast
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatal("a 100 B/s upload was not cut by a 1000 B/s minimum")
fast:
	// A body at full speed passes.
	c2 := r.dial(t)
	body := strings.Repeat("x", 50000)
	fmt.Fprintf(c2, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	if s := status(t, c2); s != 200 {
		t.Fatalf("a fast upload got %d", s)
	}
}

// A body within max_bytes reaches the instance only once it is whole: a
// slow upload holds no upstream connection while it crawls. Larger and
// gRPC bodies reach it at once, and stream.
func TestRequestBufferingTakesNoConnectionUntilTheBodyIsWhole(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		size       int
		buffered   bool
	}{
		{"within max_bytes", "", 5000, true},
		{"over max_bytes", "", 9000, false},
		{"gRPC", "Content-Type: application/grpc\r\n", 5000, false},
		{"upgrade", "Connection: Upgrade\r\nUpgrade: websocket\r\n", 5000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSlowRig(t, Options{BodyTimeout: 5 * time.Second, BufferBodyBytes: 8192}, 0, nil)
			c := r.dial(t)
			body := strings.Repeat("y", tc.size)
			fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n", tc.size, tc.head)
			io.WriteString(c, body[:tc.size/2])
			select {
			case <-r.started:
				if tc.buffered {
					t.Fatal("the instance got the request before its body was whole")
				}
			case <-time.After(500 * time.Millisecond):
				if !tc.buffered {
					t.Fatal("a streamed body did not reach the instance while it was sent")
				}
				if n := r.conns.Load(); n != 0 {
					t.Fatalf("%d upstream connections while the body is half sent; want 0", n)
				}
			}
			io.WriteString(c, body[tc.size/2:])
			if tc.name == "upgrade" {
				return // the instance does not upgrade: what it answers is not the point
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if want := fmt.Sprintf("got %d bytes", tc.size); resp.StatusCode != 200 || string(b) != want {
				t.Fatalf("%d %q; want 200 %q", resp.StatusCode, b, want)
			}
		})
	}
}

// A client that stops reading a large answer is cut after
// client_write_timeout, and its upstream request ends with it; one that
// keeps reading a slow stream is not, however long it lasts.
func TestSlowReaderIsCutAndASlowStreamIsNot(t *testing.T) {
	upstreamDone := make(chan struct{}, 1)
	r := newSlowRig(t, Options{}, 400*time.Millisecond, func(w http.ResponseWriter, req *http.Request) {
		defer func() { upstreamDone <- struct{}{} }()
		if req.URL.Path == "/stream" {
			for i := range 4 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(600 * time.Millisecond) // longer than the write timeout
			}
			return
		}
		chunk := make([]byte, 64<<10)
		for range 1024 { // 64 MiB: more than any socket buffer holds
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	c := r.dial(t)
	c.(*net.TCPConn).SetReadBuffer(4096)
	start := time.Now()
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-upstreamDone:
	case <-time.After(20 * time.Second):
		t.Fatal("a client that reads nothing still holds its upstream request after 20s")
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Fatalf("cut after %v, before half the write timeout", took)
	}
	waitFor(t, "the outcome", func() bool { return len(r.rec.all()) == 1 })

	s := r.dial(t)
	io.WriteString(s, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	s.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(s), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || strings.Count(string(b), "data:") != 4 {
		t.Fatalf("a slow stream read to its end was cut: %q, %v", b, err)
	}
}

// The body timeout holds on HTTP/2 too (h2c), stream by stream: a
// stalled upload is answered 408, and its connection serves on.
func TestStalledBodyGets408OverHTTP2(t *testing.T) {
	r := newSlowRig(t, Options{BodyTimeout: 300 * time.Millisecond, BufferBodyBytes: 1024}, 0, nil)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, length := range []int64{100, -1} { // buffered; streamed
		pr, pw := io.Pipe()
		go func() { pw.Write([]byte("0123456789")) }() // then nothing
		req, _ := http.NewRequest("POST", "http://"+r.addr+"/up", pr)
		req.ContentLength = length
		resp, err := c.Do(req)
		pw.Close()
		if err != nil {
			t.Fatalf("length %d: %v", length, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout || resp.ProtoMajor != 2 {
			t.Fatalf("length %d: %d over %s; want 408 over HTTP/2", length, resp.StatusCode, resp.Proto)
		}
	}
	// The connection still serves.
	resp, err := c.Post("http://"+r.addr+"/up", "text/plain", strings.NewReader("whole"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "got 5 bytes" {
		t.Fatalf("after the stalled ones: %d %q", resp.StatusCode, b)
	}
}
