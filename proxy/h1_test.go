package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// firstWait is proxy/internal/h1's wait for an answer before it watches
// the request's context.
const firstWait = 50 * time.Millisecond

// seen is what a backend parsed from one request.
type seen struct {
	Method, URI, Proto, Host string
	Header                   http.Header
	ContentLength            int64
	TransferEncoding         []string
}

// The fast path must put on the wire what http.Transport would for the
// same request: a backend parses both and must see the same thing.
func TestFastPathWritesWhatHTTPTransportWrites(t *testing.T) {
	var mu sync.Mutex
	var got []seen
	be := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.Method, r.RequestURI, r.Proto, r.Host, r.Header.Clone(), r.ContentLength, r.TransferEncoding})
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	tr := NewTransport(TransportOptions{})
	defer tr.CloseIdleConnections()
	base, _ := url.Parse(be.URL)
	cases := []struct {
		name   string
		method string
		target string // path and query, as the proxy would set them
		host   string
		header http.Header
	}{
		{"plain GET", "GET", "/", "", nil},
		{"query and escaped path", "GET", "/a%2Fb/c?x=1&y=%20", "", http.Header{"Accept": {"*/*"}}},
		{"empty query kept", "GET", "/p?", "", nil},
		{"HEAD", "HEAD", "/h", "", nil},
		{"OPTIONS", "OPTIONS", "/o", "", nil},
		{"PUT without body", "PUT", "/put", "", nil},
		{"DELETE", "DELETE", "/d", "", nil},
		{"repeated fields", "GET", "/", "", http.Header{"X-Multi": {"a", "b"}, "Cookie": {"c=1"}}},
		{"empty user agent sends none", "GET", "/", "", http.Header{"User-Agent": {""}}},
		{"user agent kept", "GET", "/", "", http.Header{"User-Agent": {"curl/8"}}},
		{"host preserved", "GET", "/", "app.example.com:8443", nil},
		{"request id and forwarding", "GET", "/", "", http.Header{"X-Request-Id": {"abc"}, "X-Forwarded-For": {"10.0.0.1"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var results []seen
			for _, std := range []bool{false, true} {
				u, err := base.Parse(c.target)
				if err != nil {
					t.Fatal(err)
				}
				if c.target == "/p?" {
					u.ForceQuery = true
				}
				req := &http.Request{Method: c.method, URL: u, Host: c.host, Header: c.header.Clone(), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
				if req.Header == nil {
					req.Header = http.Header{}
				}
				req = req.WithContext(context.Background())
				if !tr.fast.Carries(req) {
					t.Fatal("the fast path refused a request it should carry")
				}
				var resp *http.Response
				if std {
					resp, err = tr.std.RoundTrip(req)
				} else {
					resp, err = tr.RoundTrip(req)
				}
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				results = append(results, got[len(got)-1])
				mu.Unlock()
			}
			if !reflect.DeepEqual(results[0], results[1]) {
				t.Errorf("fast path sent\n  %+v\nhttp.Transport sent\n  %+v", results[0], results[1])
			}
		})
	}
}

func TestFastPathChoosesWhatItCanCarry(t *testing.T) {
	get := func(mod func(r *http.Request)) *http.Request {
		r, _ := http.NewRequest("GET", "http://127.0.0.1:9/x", nil)
		mod(r)
		return r
	}
	cases := []struct {
		name string
		req  *http.Request
		fast bool
	}{
		{"GET", get(func(*http.Request) {}), true},
		{"HEAD", get(func(r *http.Request) { r.Method = "HEAD" }), true},
		{"POST is not replayable", get(func(r *http.Request) { r.Method = "POST" }), false},
		{"a body", get(func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader("x")); r.ContentLength = 1 }), false},
		{"a chunked body", get(func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader("x")); r.ContentLength = -1 }), false},
		{"an upgrade", get(func(r *http.Request) { r.Header.Set("Upgrade", "websocket"); r.Header.Set("Connection", "Upgrade") }), false},
		{"https", get(func(r *http.Request) { r.URL.Scheme = "https" }), false},
		{"Connection: close", get(func(r *http.Request) { r.Close = true }), false},
		{"a control character in a value", get(func(r *http.Request) { r.Header["X-Bad"] = []string{"a\r\nb: c"} }), false},
		{"a bad field name", get(func(r *http.Request) { r.Header["Bad Name"] = []string{"x"} }), false},
		{"a zoned host", get(func(r *http.Request) { r.Host = "[fe80::1%eth0]:80" }), false},
		{"non-ASCII host", get(func(r *http.Request) { r.Host = "bücher.example" }), false},
	}
	fast := NewTransport(TransportOptions{}).fast
	for _, c := range cases {
		if got := fast.Carries(c.req); got != c.fast {
			t.Errorf("%s: fastPath = %v, want %v", c.name, got, c.fast)
		}
	}
}

// serveCounting is serve, counting the connections accepted in conns.
func serveCounting(t *testing.T, h http.Handler, conns *atomic.Int32) *httptest.Server {
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func roundTrip(t *testing.T, rt http.RoundTripper, method, u string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, u, err)
	}
	return resp, string(b)
}

// Answers without a body (HEAD, 204, 304), with a length and chunked all
// leave the connection reusable; one connection serves them all.
func TestFastPathReusesTheConnection(t *testing.T) {
	var conns atomic.Int32
	be := serveCounting(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		case "/chunked":
			w.Write([]byte("part1"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
		default:
			io.WriteString(w, "hello")
		}
	}), &conns)
	tr := NewTransport(TransportOptions{})
	defer tr.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		for _, c := range []struct{ method, path, body string }{
			{"GET", "/", "hello"}, {"HEAD", "/", ""}, {"GET", "/204", ""}, {"GET", "/304", ""}, {"GET", "/chunked", "part1part2"},
		} {
			if _, body := roundTrip(t, tr, c.method, be.URL+c.path); body != c.body {
				t.Errorf("%s %s: body %q, want %q", c.method, c.path, body, c.body)
			}
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 15 sequential requests, want 1", n)
	}
}

// A body closed before its end, or an answer with Connection: close, leaves
// the connection unusable: it is closed, not pooled.
func TestFastPathClosesWhatCannotBeReused(t *testing.T) {
	be := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, strings.Repeat("x", 64<<10))
	}))
	addr := strings.TrimPrefix(be.URL, "http://")
	tr := NewTransport(TransportOptions{})
	defer tr.CloseIdleConnections()

	req, _ := http.NewRequest("GET", be.URL+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 10))
	resp.Body.Close()
	waitFor(t, "early-closed body's connection closed", func() bool { return tr.OpenConns(addr) == 0 })

	roundTrip(t, tr, "GET", be.URL+"/close")
	waitFor(t, "Connection: close honoured", func() bool { return tr.OpenConns(addr) == 0 })
}

// An instance may close a keep-alive connection while it sits in the pool.
// The next request finds it dead before any answer and goes once more on a
// new connection; the client never sees the stale one.
func TestFastPathRetriesAPooledConnectionTheInstanceClosed(t *testing.T) {
	var conns, requests atomic.Int32
	be := serveCounting(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		io.WriteString(w, "ok")
	}), &conns)
	tr := NewTransport(TransportOptions{})
	defer tr.CloseIdleConnections()
	for i := 0; i < 5; i++ {
		if _, body := roundTrip(t, tr, "GET", be.URL); body != "ok" {
			t.Fatalf("round %d: body %q", i, body)
		}
		be.CloseClientConnections()
	}
	if n := requests.Load(); n != 5 {
		t.Errorf("the instance handled %d requests for 5 sent; a retry must only follow a request that was not handled", n)
	}
	if n := conns.Load(); n != 5 {
		t.Errorf("%d connections, want 5 (each closed by the instance)", n)
	}
}

func TestFastPathIdleConnectionsExpire(t *testing.T) {
	be := backend(t, "a")
	addr := strings.TrimPrefix(be.URL, "http://")
	tr := NewTransport(TransportOptions{IdleConnTimeout: 100 * time.Millisecond})
	defer tr.CloseIdleConnections()
	roundTrip(t, tr, "GET", be.URL)
	if n := tr.OpenConns(addr); n != 1 {
		t.Fatalf("%d open after one request, want 1 idle", n)
	}
	waitFor(t, "idle connection expired", func() bool { return tr.OpenConns(addr) == 0 })
	roundTrip(t, tr, "GET", be.URL) // and a new one is made after
}

// 103 Early Hints reach the client before the final answer.
func TestEarlyHintsAreForwarded(t *testing.T) {
	be := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	}))
	r := newRig(t, Options{}, routeSpec(t, pool{"blue", 10000, []string{be.URL}}))
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, h.Get("Link"))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", r.srv.URL+"/", nil)
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "final" || len(hints) != 1 || hints[0] != "</style.css>; rel=preload" {
		t.Errorf("status %d body %q hints %q", resp.StatusCode, b, hints)
	}
}

// A client that leaves in the middle of a streamed answer releases the
// instance: the upstream connection is closed at once, which the instance
// sees as its request's context ending.
func TestClientLeavingMidBodyReleasesTheInstance(t *testing.T) {
	released := make(chan struct{})
	be := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first chunk")
		w.(http.Flusher).Flush()
		holdUntilGone(r, released)
	}))
	r := newRig(t, Options{}, routeSpec(t, pool{"blue", 10000, []string{be.URL}}))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", r.srv.URL+"/", nil)
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("the instance was still held 5s after the client left")
	}
	waitFor(t, "499 outcome", func() bool { return len(r.rec.all()) == 1 })
	if o := r.rec.all()[0]; o.Status != StatusClientClosed && o.Status != http.StatusOK {
		t.Errorf("outcome status %d", o.Status)
	}
}

// An instance that accepts and never answers trips the header timeout on
// the fast path too, and the connection is not pooled.
func TestFastPathHeaderTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c) // reads the request, answers nothing
	}()
	tr := NewTransport(TransportOptions{ResponseHeaderTimeout: 200 * time.Millisecond})
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://"+l.Addr().String()+"/", nil)
	start := time.Now()
	_, err = tr.RoundTrip(req)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err %v, want a timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v for a 200ms header timeout", d)
	}
	if n := tr.OpenConns(l.Addr().String()); n != 0 {
		t.Errorf("%d connections left open", n)
	}
}

// An answer slower than the first wait still arrives (the wait is then
// extended to the header timeout and the request's context is watched).
func TestFastPathSlowAnswer(t *testing.T) {
	be := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * firstWait)
		io.WriteString(w, "late")
	}))
	tr := NewTransport(TransportOptions{})
	defer tr.CloseIdleConnections()
	if _, body := roundTrip(t, tr, "GET", be.URL); body != "late" {
		t.Errorf("body %q", body)
	}
}

// A client that leaves while the answer is still awaited, before the
// first wait is over, releases the instance soon after that wait.
func TestClientLeavingBeforeASlowAnswer(t *testing.T) {
	released := make(chan struct{})
	be := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		holdUntilGone(r, released)
	}))
	tr := NewTransport(TransportOptions{})
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), firstWait/3)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", be.URL, nil)
	start := time.Now()
	if _, err := tr.RoundTrip(req); err == nil {
		t.Fatal("the round trip succeeded after its context ended")
	}
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("the instance was still held 5s after the client left")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("released after %v", d)
	}
}

// A header timeout shorter than the first wait is honoured as such.
func TestFastPathShortHeaderTimeout(t *testing.T) {
	be := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		holdUntilGone(r, nil)
	}))
	tr := NewTransport(TransportOptions{ResponseHeaderTimeout: firstWait / 5})
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", be.URL, nil)
	_, err := tr.RoundTrip(req)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err %v, want a timeout", err)
	}
}

// A header timeout on a pooled connection is not taken for a connection
// the instance closed: the request is not sent again.
func TestFastPathTimeoutOnAPooledConnectionIsNotRetried(t *testing.T) {
	var requests atomic.Int32
	be := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			return
		}
		holdUntilGone(r, nil)
	}))
	tr := NewTransport(TransportOptions{ResponseHeaderTimeout: 4 * firstWait})
	defer tr.CloseIdleConnections()
	roundTrip(t, tr, "GET", be.URL) // leaves its connection in the pool
	req, _ := http.NewRequest("GET", be.URL, nil)
	if _, err := tr.RoundTrip(req); err == nil {
		t.Fatal("no error past the header timeout")
	}
	time.Sleep(2 * firstWait) // a retry would have arrived by now
	if n := requests.Load(); n != 2 {
		t.Errorf("the instance got %d requests, want 2", n)
	}
}

// A body far larger than the connection's buffer, with a Content-Length,
// arrives whole, and the connection is reused after it.
func TestFastPathLargeBody(t *testing.T) {
	var conns atomic.Int32
	payload := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB
	be := serveCounting(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(payload)))
		io.WriteString(w, payload)
	}), &conns)
	tr := NewTransport(TransportOptions{})
	defer tr.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		if _, body := roundTrip(t, tr, "GET", be.URL); body != payload {
			t.Fatalf("round %d: got %d bytes, want %d", i, len(body), len(payload))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 3 sequential requests, want 1", n)
	}
}
