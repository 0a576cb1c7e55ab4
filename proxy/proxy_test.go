package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/balancer"
	"canaryd/bench/handlerbench"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Through the real proxy to two loopback backends, 10,000 requests from
// concurrent clients split exactly by weight.
func TestSplitIsExactOver10000Requests(t *testing.T) {
	blue, green := backend(t, "blue"), backend(t, "green")
	for _, tc := range []struct{ blue, green int }{{9000, 1000}, {9900, 100}, {50, 9950}} {
		t.Run(fmt.Sprintf("%d/%d", tc.blue, tc.green), func(t *testing.T) {
			r := newRig(t, Options{}, routeSpec(t,
				pool{"blue", tc.blue, []string{blue.URL}},
				pool{"green", tc.green, []string{green.URL}}))
			var counts [2]atomic.Int64
			var failed atomic.Int64
			const total, workers = 10000, 8
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < total/workers; i++ {
						resp, err := r.client.Get(r.srv.URL + "/")
						if err != nil {
							failed.Add(1)
							continue
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						switch resp.Header.Get("X-Backend") {
						case "blue":
							counts[0].Add(1)
						case "green":
							counts[1].Add(1)
						default:
							failed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			if failed.Load() != 0 || counts[0].Load() != int64(tc.blue) || counts[1].Load() != int64(tc.green) {
				t.Errorf("blue %d green %d failed %d; want %d/%d/0", counts[0].Load(), counts[1].Load(), failed.Load(), tc.blue, tc.green)
			}
		})
	}
}

func TestStickyAndForceThroughProxy(t *testing.T) {
	blue, green := backend(t, "blue"), backend(t, "green")
	s := routeSpec(t, pool{"blue", 10000, []string{blue.URL}}, pool{"green", 0, []string{green.URL}})
	s.ForceHeader = "X-Canary-Pool"
	s.StickyCookie = "uid"
	r := newRig(t, Options{}, s)
	for i := 0; i < 20; i++ {
		if _, body := r.get(t, "/", http.Header{"X-Canary-Pool": {"green"}}); body != "green" {
			t.Fatalf("force header to a weight-0 pool reached %q", body)
		}
		if _, body := r.get(t, "/", http.Header{"Cookie": {"uid=someone"}}); body != "blue" {
			t.Fatalf("sticky user at green weight 0 reached %q", body)
		}
	}
	// At 50/50 a sticky user stays where their bucket is.
	s.Pools[0].Weight, s.Pools[1].Weight = 5000, 5000
	if _, err := r.router.Apply([]balancer.RouteSpec{s}); err != nil {
		t.Fatal(err)
	}
	for u := 0; u < 50; u++ {
		hdr := http.Header{"Cookie": {fmt.Sprintf("uid=user-%d", u)}}
		_, first := r.get(t, "/", hdr)
		for k := 0; k < 3; k++ {
			if _, b := r.get(t, "/", hdr); b != first {
				t.Fatalf("user-%d flipped %s → %s", u, first, b)
			}
		}
	}
}

// A request that forces its pool is marked so in its outcome (the
// rollout judges previews apart), and the preview secret is between the
// client and canaryd: the instance never sees it. Both paths.
func TestForcedOutcomeAndSecretHeader(t *testing.T) {
	for _, fast := range []bool{true, false} {
		seen := make(chan http.Header, 4)
		inst := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen <- r.Header.Clone()
			io.WriteString(w, "ok")
		}))
		s := routeSpec(t, pool{"blue", 10000, []string{inst.URL}}, pool{"green", 0, []string{inst.URL}})
		s.ForceHeader = "X-Canary-Pool"
		s.ForceSecret, s.ForceSecretHeader = "s3cret", "X-Canary-Secret"
		r := newRig(t, Options{Transport: NewTransport(TransportOptions{DisableFastPath: !fast})}, s)
		r.get(t, "/", http.Header{"X-Canary-Pool": {"green"}, "X-Canary-Secret": {"s3cret"}})
		if h := <-seen; h.Get("X-Canary-Secret") != "" || h.Get("X-Canary-Pool") != "green" {
			t.Errorf("fast %v: the instance saw %v", fast, h)
		}
		r.get(t, "/", http.Header{"X-Canary-Pool": {"green"}, "X-Canary-Secret": {"wrong"}})
		if h := <-seen; h.Get("X-Canary-Secret") != "" {
			t.Errorf("fast %v: a wrong secret reached the instance: %v", fast, h)
		}
		waitFor(t, "2 outcomes", func() bool { return len(r.rec.all()) == 2 })
		out := r.rec.all()
		if !out[0].Forced || out[0].Pool.Name != "green" || out[1].Forced || out[1].Pool.Name != "blue" {
			t.Errorf("fast %v: outcomes forced %v (%s), %v (%s); want true (green), false (blue)",
				fast, out[0].Forced, out[0].Pool.Name, out[1].Forced, out[1].Pool.Name)
		}
	}
}

func TestForwardedHeaders(t *testing.T) {
	var got atomic.Pointer[http.Header]
	echo := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		got.Store(&h)
	}))
	spec := routeSpec(t, pool{"blue", 10000, []string{echo.URL}})

	t.Run("untrusted peer is replaced", func(t *testing.T) {
		r := newRig(t, Options{}, spec)
		r.get(t, "/", http.Header{
			"X-Forwarded-For":   {"6.6.6.6"},
			"X-Forwarded-Host":  {"evil.example"},
			"X-Forwarded-Proto": {"https"},
			"Forwarded":         {"for=6.6.6.6"},
		})
		h := *got.Load()
		if xff := h.Get("X-Forwarded-For"); xff != "127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q, want the real peer 127.0.0.1", xff)
		}
		if h.Get("Forwarded") != "" || h.Get("X-Forwarded-Proto") != "http" || strings.Contains(h.Get("X-Forwarded-Host"), "evil") {
			t.Errorf("spoofed forwarding headers kept: %v", h)
		}
	})
	t.Run("Connection cannot strip what the proxy sets", func(t *testing.T) {
		r := newRig(t, Options{}, spec)
		r.get(t, "/", http.Header{
			"Connection":      {"X-Forwarded-For, X-Request-Id, X-Forwarded-Proto"},
			"X-Forwarded-For": {"6.6.6.6"},
		})
		h := *got.Load()
		if h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Request-Id") == "" || h.Get("X-Forwarded-Proto") != "http" {
			t.Errorf("headers the proxy sets were stripped or spoofed: %v", h)
		}
	})
	t.Run("trusted peer chain is kept", func(t *testing.T) {
		r := newRig(t, Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, spec)
		r.get(t, "/", http.Header{"X-Forwarded-For": {"203.0.113.9"}, "X-Forwarded-Proto": {"https"}})
		h := *got.Load()
		if xff := h.Get("X-Forwarded-For"); xff != "203.0.113.9, 127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q, want the chain extended", xff)
		}
		if h.Get("X-Forwarded-Proto") != "https" {
			t.Errorf("trusted X-Forwarded-Proto lost: %v", h)
		}
	})
}

func TestHostBasePathAndRequestID(t *testing.T) {
	type seen struct{ host, path, id string }
	var got atomic.Pointer[seen]
	be := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(&seen{r.Host, r.URL.EscapedPath(), r.Header.Get("X-Request-Id")})
	}))
	spec := routeSpec(t, pool{"blue", 10000, []string{be.URL + "/base"}})
	r := newRig(t, Options{}, spec)

	resp, _ := r.get(t, "/a%2Fb/c?q=1", http.Header{"X-Request-Id": {"trace-123"}})
	s := got.Load()
	if s.path != "/base/a%2Fb/c" || !strings.HasPrefix(s.host, "127.0.0.1:") || s.host == strings.TrimPrefix(be.URL, "http://") {
		t.Errorf("instance saw host %q path %q; want the client's host and /base/a%%2Fb/c", s.host, s.path)
	}
	if s.id != "trace-123" || resp.Header.Get("X-Request-Id") != "trace-123" {
		t.Errorf("request id not passed through: instance %q, response %q", s.id, resp.Header.Get("X-Request-Id"))
	}
	resp, _ = r.get(t, "/", nil)
	if id := got.Load().id; len(id) != 16 || resp.Header.Get("X-Request-Id") != id {
		t.Errorf("generated id %q, response %q", id, resp.Header.Get("X-Request-Id"))
	}

	spec.PreserveHost = false
	r2 := newRig(t, Options{}, spec)
	r2.get(t, "/", nil)
	if h := got.Load().host; h != strings.TrimPrefix(be.URL, "http://") {
		t.Errorf("preserve_host false: instance saw host %q", h)
	}
}

func TestWebSocketEcho(t *testing.T) {
	for _, count := range []bool{false, true} {
		t.Run(fmt.Sprint("count bytes ", count), func(t *testing.T) { testWebSocketEcho(t, count) })
	}
}

func testWebSocketEcho(t *testing.T, countBytes bool) {
	r := newRig(t, Options{CountBytes: countBytes}, routeSpec(t, pool{"blue", 10000, []string{wsEcho(t).URL}}))
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
		t.Fatalf("handshake: %d %v", resp.StatusCode, resp.Header)
	}
	for _, msg := range []string{"hello", "canary", strings.Repeat("x", 100)} {
		conn.Write(maskedFrame(0x1, []byte(msg)))
		op, payload, err := readFrame(br)
		if err != nil || op != 0x1 || string(payload) != msg {
			t.Fatalf("echo of %q: op %d payload %q err %v", msg, op, payload, err)
		}
	}
	conn.Write(maskedFrame(0x8, nil))
}

// Each event must reach the client before the backend writes the next one:
// the backend waits for the client's acknowledgement in between.
func TestServerSentEventsAreNotBuffered(t *testing.T) {
	for _, count := range []bool{false, true} {
		t.Run(fmt.Sprint("count bytes ", count), func(t *testing.T) { testSSE(t, count) })
	}
}

func testSSE(t *testing.T, countBytes bool) {
	ack := make(chan struct{})
	sse := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Length", "") // force no length
		rc := http.NewResponseController(w)
		for i := 1; i <= 5; i++ {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			rc.Flush()
			select {
			case <-ack:
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Second):
				return
			}
		}
	}))
	r := newRig(t, Options{CountBytes: countBytes}, routeSpec(t, pool{"blue", 10000, []string{sse.URL}}))
	resp, err := r.client.Get(r.srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if l := sc.Text(); l != "" {
				lines <- l
			}
		}
	}()
	for i := 1; i <= 5; i++ {
		select {
		case l := <-lines:
			if want := fmt.Sprintf("data: event %d", i); l != want {
				t.Fatalf("got %q, want %q", l, want)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("event %d did not arrive: the proxy buffers the stream", i)
		}
		ack <- struct{}{}
	}
	for range lines {
	}
	if countBytes {
		waitFor(t, "outcome", func() bool { return len(r.rec.all()) == 1 })
		if o := r.rec.all()[0]; o.Bytes != int64(5*len("data: event 1\n\n")) {
			t.Errorf("counted %d bytes", o.Bytes)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	slow := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	tr := NewTransport(TransportOptions{ResponseHeaderTimeout: 300 * time.Millisecond})

	t.Run("502 connection refused", func(t *testing.T) {
		r := newRig(t, Options{Logger: log}, routeSpec(t, pool{"blue", 10000, []string{deadAddr(t)}}))
		if resp, _ := r.get(t, "/", nil); resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status %d", resp.StatusCode)
		}
		waitFor(t, "outcome", func() bool { return len(r.rec.all()) == 1 })
		if o := r.rec.all()[0]; o.Status != 502 || !o.GatewayFailure() || o.Err == nil {
			t.Errorf("outcome %+v", o)
		}
	})
	t.Run("503 no available instance", func(t *testing.T) {
		be := backend(t, "blue")
		r := newRig(t, Options{Logger: log}, routeSpec(t, pool{"blue", 10000, []string{be.URL}}))
		if !r.router.SetAvailable(r.router.Load().Route("web").Pools[0].Instances[0], false) {
			t.Fatal("blue's instance was already out")
		}
		if resp, _ := r.get(t, "/", nil); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("504 upstream timeout", func(t *testing.T) {
		r := newRig(t, Options{Logger: log, Transport: tr}, routeSpec(t, pool{"blue", 10000, []string{slow.URL}}))
		start := time.Now()
		resp, _ := r.get(t, "/", nil)
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("status %d", resp.StatusCode)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("504 took %v; the header timeout is 300ms", d)
		}
	})
	t.Run("499 client went away", func(t *testing.T) {
		r := newRig(t, Options{Logger: log}, routeSpec(t, pool{"blue", 10000, []string{slow.URL}}))
		before := logs.Len()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.srv.URL+"/", nil)
		if _, err := r.client.Do(req); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("client error %v", err)
		}
		waitFor(t, "499 outcome", func() bool { return len(r.rec.all()) == 1 })
		o := r.rec.all()[0]
		if o.Status != StatusClientClosed || o.GatewayFailure() {
			t.Errorf("outcome status %d gateway failure %v; want 499, not a backend failure", o.Status, o.GatewayFailure())
		}
		for _, e := range logs.All()[before:] {
			if e.Level >= zapcore.WarnLevel {
				t.Errorf("client disconnect logged at %s: %s", e.Level, e.Message)
			}
		}
	})
	tr.CloseIdleConnections()
}

func TestRetryGETOnAnotherInstance(t *testing.T) {
	live := backend(t, "live")
	r := newRig(t, Options{}, routeSpec(t, pool{"blue", 10000, []string{deadAddr(t), live.URL}}))
	for i := 0; i < 20; i++ {
		if resp, body := r.get(t, "/", nil); resp.StatusCode != 200 || body != "live" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	waitFor(t, "20 outcomes", func() bool { return len(r.rec.all()) == 20 })
	retried := 0
	for _, o := range r.rec.all() {
		if o.Unreachable != nil {
			retried++
			if o.Instance.Addr != live.URL || o.Status != 200 {
				t.Errorf("retried outcome %+v", o)
			}
		}
	}
	if retried != 10 {
		t.Errorf("%d of 20 requests were retried; round robin sends 10 to the dead instance", retried)
	}
}

func TestPOSTIsNeverSentTwice(t *testing.T) {
	var mu sync.Mutex
	received := map[string]int{}
	count := func(r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		received[string(b)]++
		mu.Unlock()
	}
	live := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { count(r) }))
	// dropper reads the whole request, then closes the connection unanswered.
	dropper := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count(r)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	post := func(r *rig, body string) int {
		resp, err := r.client.Post(r.srv.URL+"/", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	r := newRig(t, Options{}, routeSpec(t, pool{"blue", 10000, []string{deadAddr(t), live.URL}}))
	ok, bad := 0, 0
	for i := 0; i < 20; i++ {
		switch post(r, fmt.Sprintf("refused-%d", i)) {
		case 200:
			ok++
		case 502:
			bad++
		}
	}
	if ok != 10 || bad != 10 {
		t.Errorf("POSTs with one dead instance: %d ok, %d 502; want 10/10 (no retry)", ok, bad)
	}

	r2 := newRig(t, Options{}, routeSpec(t, pool{"blue", 10000, []string{dropper.URL}}))
	for i := 0; i < 10; i++ {
		if s := post(r2, fmt.Sprintf("dropped-%d", i)); s != 502 {
			t.Errorf("POST to a dropping backend: %d, want 502", s)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for body, n := range received {
		if n != 1 {
			t.Errorf("%s reached a backend %d times", body, n)
		}
	}
	if len(received) != 20 {
		t.Errorf("%d distinct POSTs reached backends, want 20", len(received))
	}
}

func TestNoRoute(t *testing.T) {
	s := routeSpec(t, pool{"blue", 10000, []string{backend(t, "b").URL}})
	s.PathPrefix = "/api"
	r := newRig(t, Options{}, s)
	if resp, _ := r.get(t, "/other", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("status %d", resp.StatusCode)
	}
}

func TestClassify(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	bg := context.Background()
	for _, tc := range []struct {
		ctx  context.Context
		err  error
		want int
	}{
		{bg, &net.OpError{Op: "dial", Err: errors.New("connection refused")}, 502},
		{bg, errors.New("read: connection reset by peer"), 502},
		{bg, io.ErrUnexpectedEOF, 502},
		{bg, context.DeadlineExceeded, 504},
		{bg, &net.OpError{Op: "dial", Err: timeoutErr{}}, 504},
		{cancelled, context.Canceled, 499},
		{cancelled, &net.OpError{Op: "dial", Err: timeoutErr{}}, 499},
	} {
		if got := classify(tc.ctx, tc.err); got != tc.want {
			t.Errorf("classify(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func BenchmarkProxyPath(b *testing.B) {
	blue, green := backend(b, "blue"), backend(b, "green")
	r := newRig(b, Options{Observer: nopObserver{}}, routeSpec(b,
		pool{"blue", 9000, []string{blue.URL}}, pool{"green", 1000, []string{green.URL}}))
	h := New(r.router, Options{Observer: nopObserver{}})
	b.Run("handler", func(b *testing.B) { handlerbench.Run(b, h) })
	// A route whose rollout closes streams (rollback.close_streams_after):
	// a plain request is only looked at (three header lookups), a stream
	// is kept. Other routes look at nothing.
	tracked := routeSpec(b, pool{"blue", 9000, []string{blue.URL}}, pool{"green", 1000, []string{green.URL}})
	tracked.TrackStreams = true
	rs := newRig(b, Options{Observer: nopObserver{}}, tracked)
	hs := New(rs.router, Options{Observer: nopObserver{}, Streams: NewStreams()})
	b.Run("handler-streams-kept", func(b *testing.B) { handlerbench.Run(b, hs) })
	b.Run("handler-streams-kept-sse", func(b *testing.B) {
		handlerbench.Run(b, hs, func(r *http.Request) { r.Header.Set("Accept", "text/event-stream") })
	})
	// The same route with canaryd's signed affinity cookie, for a client
	// that has one, and with ten rules that the request matches none of.
	aff := routeSpec(b, pool{"blue", 9000, []string{blue.URL}}, pool{"green", 1000, []string{green.URL}})
	aff.Affinity = &balancer.AffinitySpec{Cookie: "cd", Path: "/", Secret: "0123456789abcdef"}
	ra := newRig(b, Options{Observer: nopObserver{}}, aff)
	ha := New(ra.router, Options{Observer: nopObserver{}})
	cookie := strings.SplitN(ra.router.Load().Route("web").AffinityCookie(4321, false), ";", 2)[0]
	b.Run("handler-affinity-cookie", func(b *testing.B) {
		handlerbench.Run(b, ha, func(r *http.Request) { r.Header.Set("Cookie", "session=abc; "+cookie) })
	})
	ruled := routeSpec(b, pool{"blue", 9000, []string{blue.URL}}, pool{"green", 1000, []string{green.URL}})
	for i := range 10 {
		ruled.Rules = append(ruled.Rules, balancer.RuleSpec{Name: fmt.Sprint("r", i), Pool: "green",
			Headers: []balancer.StringMatch{{Name: fmt.Sprint("X-Tenant-", i%3), Kind: balancer.MatchIn, Values: []string{"acme", "globex"}}}})
	}
	rr := newRig(b, Options{Observer: nopObserver{}}, ruled)
	hr := New(rr.router, Options{Observer: nopObserver{}})
	b.Run("handler-10-rules", func(b *testing.B) {
		handlerbench.Run(b, hr, func(r *http.Request) { r.Header.Set("X-Tenant-0", "hooli") })
	})
	b.Run("loopback", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			resp, err := r.client.Get(r.srv.URL + "/")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

type nopObserver struct{}

func (nopObserver) Observe(*Outcome) {}

// Connections are tracked per address: closing one instance's leaves the
// other's open and usable.
func TestTransportClosesOneInstancesConns(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	tr := NewTransport(TransportOptions{})
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for _, u := range []string{a.URL, b.URL} {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	addrA, addrB := strings.TrimPrefix(a.URL, "http://"), strings.TrimPrefix(b.URL, "http://")
	if tr.OpenConns(addrA) != 1 || tr.OpenConns(addrB) != 1 {
		t.Fatalf("open conns: a %d b %d", tr.OpenConns(addrA), tr.OpenConns(addrB))
	}
	if n := tr.CloseConnsTo(addrA); n != 1 || tr.OpenConns(addrA) != 0 || tr.OpenConns(addrB) != 1 {
		t.Errorf("CloseConnsTo(a) = %d; open a %d b %d", n, tr.OpenConns(addrA), tr.OpenConns(addrB))
	}
	resp, err := client.Get(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if tr.OpenConns(addrB) != 1 {
		t.Errorf("b's connection was not reused: %d open", tr.OpenConns(addrB))
	}
}
