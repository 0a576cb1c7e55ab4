package app

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/internal/testcerts"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientAt is an HTTP client whose connections come from ip.
func clientAt(ip string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:         (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext,
		MaxIdleConnsPerHost: 16,
	}}
}

// alive reports whether a raw connection is served: a request on it gets
// an answer (false: canaryd closed it as it came).
func served(addr, from string) bool {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(c)
	return strings.HasPrefix(string(b), "HTTP/1.1 200")
}

// The limits in server.limits, each met and passed for real: connections
// over them are closed as they come, requests over them get 503 with
// Retry-After; another client is still served, the admin listener answers,
// and every refusal is counted under its limit.
func TestServerLimits(t *testing.T) {
	g := newGate(t)
	r := startFileRig(t, t.TempDir(), fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
server:
  limits: { max_connections: 12, max_connections_per_client: 5, max_requests_in_flight: 6, max_requests_in_flight_per_client: 3 }
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["%s"] }]
`, g.URL))
	addr := r.srv.ProxyAddr().String()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	hold := func(from string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		return c
	}
	// Connections: 4 idle ones from 127.0.0.1 plus one request make 5.
	for range 4 {
		hold("127.0.0.1")
	}
	if !served(addr, "127.0.0.1") {
		t.Fatal("the fifth connection of 127.0.0.1 was refused; the limit is 5")
	}
	for range 5 {
		hold("127.0.0.1")
	}
	waitUntil(t, "the refusals counted", func() bool {
		return metricValue(t, r.reg, "canaryd_overload_refused_total", `limit="max_connections_per_client"`) >= 1
	})
	if served(addr, "127.0.0.1") {
		t.Fatal("a sixth connection of 127.0.0.1 was served; the limit is 5")
	}
	if !served(addr, "127.0.0.2") {
		t.Fatal("127.0.0.2 was refused while 127.0.0.1 was at its limit")
	}
	for _, ip := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3", "127.0.0.3", "127.0.0.3"} {
		hold(ip)
	}
	waitUntil(t, "the listener to hold 12", func() bool {
		return metricValue(t, r.reg, "canaryd_client_connections", "") == 12
	})
	if served(addr, "127.0.0.4") {
		t.Fatal("a thirteenth connection was served; max_connections is 12")
	}
	if resp, err := r.client.Get(r.admin + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the admin listener at max_connections: %v", err)
	} else {
		resp.Body.Close()
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	waitUntil(t, "the connections given back", func() bool {
		return metricValue(t, r.reg, "canaryd_client_connections", "") == 0
	})

	// Requests in flight: 3 held from 127.0.0.1, the fourth refused.
	one, two, three := clientAt("127.0.0.1"), clientAt("127.0.0.2"), clientAt("127.0.0.3")
	defer func() {
		for _, c := range []*http.Client{one, two, three} {
			c.CloseIdleConnections()
		}
	}()
	done := make(chan int, 16)
	send := func(c *http.Client, path string) {
		go func() {
			resp, err := c.Get(r.proxy + path)
			if err != nil {
				done <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			done <- resp.StatusCode
		}()
	}
	for range 3 {
		send(one, "/slow")
	}
	waitUntil(t, "3 requests at the instance", func() bool { return g.now.Load() == 3 })
	resp, err := one.Get(r.proxy + "/fast")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a fourth request of one client: %d, Retry-After %q; want 503 with one", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	for range 3 {
		send(two, "/slow")
	}
	waitUntil(t, "6 requests at the instance", func() bool { return g.now.Load() == 6 })
	resp, err = three.Get(r.proxy + "/fast")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("a seventh request in all: %d; want 503 (max_requests_in_flight 6)", resp.StatusCode)
	}
	close(g.release)
	for range 6 {
		if s := <-done; s != 200 {
			t.Fatalf("a held request ended %d", s)
		}
	}
	for _, l := range []string{"max_connections", "max_connections_per_client", "max_requests_in_flight", "max_requests_in_flight_per_client"} {
		if n := metricValue(t, r.reg, "canaryd_overload_refused_total", `limit="`+l+`"`); n < 1 {
			t.Errorf("refusals over %s: %v; want at least 1", l, n)
		}
	}
	if n := metricValue(t, r.reg, "canaryd_overload_limit", `limit="max_requests_in_flight"`); n != 6 {
		t.Errorf("canaryd_overload_limit{max_requests_in_flight} = %v", n)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within 10s", what)
}

// The HTTP/2 settings canaryd advertises keep a frame within a stream's
// window, and a client that sends DATA frames of the advertised maximum
// size has its request served, not its stream reset.
func TestHTTP2FrameSizeWithinTheWindow(t *testing.T) {
	be := protoBackend(t)
	r := h2Rig(t, be.URL)
	h := dialH2(t, r.srv.ProxyAddr().String())
	var maxFrame, window uint32 = 16384, 65535
	for {
		h.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			if v, ok := s.Value(http2.SettingMaxFrameSize); ok {
				maxFrame = v
			}
			if v, ok := s.Value(http2.SettingInitialWindowSize); ok {
				window = v
			}
			h.fr.WriteSettingsAck()
			break
		}
	}
	if maxFrame > window {
		t.Fatalf("SETTINGS_MAX_FRAME_SIZE %d is over SETTINGS_INITIAL_WINDOW_SIZE %d", maxFrame, window)
	}
	if maxFrame != 256<<10 {
		t.Errorf("SETTINGS_MAX_FRAME_SIZE %d; want the stream window's 262144 by default", maxFrame)
	}
	// The connection window is 65535 until the server's WINDOW_UPDATE;
	// the body is sent once the windows allow it, in frames of the
	// advertised maximum.
	h.fr.SetMaxReadFrameSize(1 << 20)
	h.buf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}, {"content-length", fmt.Sprint(maxFrame)}} {
		h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.buf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	connWindow := int64(65535)
	sent := false
	for {
		if !sent && connWindow >= int64(maxFrame) {
			if err := h.fr.WriteData(1, true, make([]byte, maxFrame)); err != nil {
				t.Fatal(err)
			}
			sent = true
		}
		h.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v (data sent: %v)", err, sent)
		}
		switch f := f.(type) {
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				connWindow += int64(f.Increment)
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("the stream was reset (%v) for a DATA frame of the advertised maximum size", f.ErrCode)
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v", f.ErrCode)
		case *http2.HeadersFrame:
			if !sent {
				t.Fatal("answered before the body was sent")
			}
			return // the answer's headers: served
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		}
	}
}

// The listener offers no CBC suite: the wiring of tls.ciphers' default
// (the full table of suites is tlsfiles' TestOnlyAEADSuitesWithForwardSecrecy).
func TestTLSListenerRefusesCBC(t *testing.T) {
	be := protoBackend(t)
	r, ca := tlsRig(t, be.URL, "", "")
	addr := r.srv.ProxyAddr().String()
	for _, tc := range []struct {
		suite uint16
		ok    bool
	}{
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, false},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true},
		{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true},
	} {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "site.test", MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tc.suite}})
		if err == nil {
			c.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v; want success %v", tls.CipherSuiteName(tc.suite), err, tc.ok)
		}
	}
}

// One process rotates its own session ticket keys
// (tls.session_ticket_rotation): a ticket resumes across a rotation, and
// not once its key is three rotations old.
func TestTicketRotationInOneProcess(t *testing.T) {
	long(t)
	be := protoBackend(t)
	r, ca := tlsRig(t, be.URL, "", ", session_ticket_rotation: 1s")
	url := "https://" + r.srv.ProxyAddr().String() + "/"
	get := func(cache tls.ClientSessionCache) bool {
		t.Helper()
		tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{
			RootCAs: ca.Pool, ServerName: "site.test", MaxVersion: tls.VersionTLS12, ClientSessionCache: cache,
		}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.TLS.DidResume
	}
	cache := tls.NewLRUClientSessionCache(1)
	issued := time.Now()
	get(cache)
	st, ok := cache.Get("site.test")
	if !ok {
		t.Fatal("no ticket")
	}
	ticket := oneSession{st}
	time.Sleep(1300 * time.Millisecond)
	// Rotations come at least 1s apart, so until 2s after the ticket at
	// most two have passed and its key still decrypts. A loaded machine
	// can oversleep past that: the check is then not judged.
	if resumed := get(ticket); !resumed && time.Since(issued) < 2*time.Second {
		t.Errorf("a ticket from before a rotation did not resume (%v after it was issued)", time.Since(issued))
	} else if !resumed {
		t.Logf("the check came %v after the ticket, past two rotations: not judged", time.Since(issued))
	}
	// Three rotations take 3s at the least; 6s leaves room for a loaded
	// machine's late timers.
	time.Sleep(time.Until(issued.Add(6 * time.Second)))
	if get(ticket) {
		t.Error("a ticket resumed 6s after it was issued, with keys rotated every 1s and 3 kept")
	}
}

// oneSession offers one session and keeps no new one.
type oneSession struct{ s *tls.ClientSessionState }

func (o oneSession) Get(string) (*tls.ClientSessionState, bool) { return o.s, true }
func (o oneSession) Put(string, *tls.ClientSessionState)        {}

// Behind a trusted L4 balancer that sends PROXY headers, connections
// count against the client each header names, not the balancer: one
// client at its limit is refused while another behind the same balancer,
// and the balancer's own header-less health checks, are served.
func TestServerLimitsBehindPROXYProtocol(t *testing.T) {
	be := protoBackend(t)
	r := startFileRig(t, t.TempDir(), fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
trusted_proxies: [127.0.0.1]
server: { proxy_protocol: true, limits: { max_connections: 50, max_connections_per_client: 2 } }
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["%s"] }]
`, be.URL))
	addr := r.srv.ProxyAddr().String()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// open sends a PROXY header naming client (none: a health check) and
	// a request, and reports whether it was answered; keep holds the
	// connection open afterwards.
	open := func(client string, keep bool) bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if keep {
			held = append(held, c)
		} else {
			defer c.Close()
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if client != "" {
			fmt.Fprintf(c, "PROXY TCP4 %s 127.0.0.1 40000 80\r\n", client)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	if !open("198.51.100.1", true) || !open("198.51.100.1", true) {
		t.Fatal("two connections of one client within its limit of 2 were refused")
	}
	if open("198.51.100.1", false) {
		t.Fatal("a third connection of 198.51.100.1 was served; its limit is 2")
	}
	if !open("198.51.100.2", false) {
		t.Fatal("another client behind the same balancer was refused")
	}
	for range 3 {
		if !open("", false) {
			t.Fatal("the balancer's own health check was refused")
		}
	}
}

// A flood of connections that never finish their TLS handshake logs at
// most serverLogLines lines a second from the server, and then how many
// it dropped: a flood of bad connections is not a flood of logs.
func TestServerLogIsLimited(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "CA")
	cf, kf := ca.WriteLeaf(t, dir, "site", "site.test")
	cfg, err := config.Parse("c.yaml", []byte(fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
state_dir: %q
tls: { cert_file: %s, key_file: %s }
routes: [{ name: web, pools: [{ name: blue, weight: 100, instances: ["127.0.0.1:1"] }] }]
`, dir, cf, kf)))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	srv, err := New(cfg, Options{Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	serveFor(t, srv)
	start := time.Now()
	for range 300 {
		c, err := net.Dial("tcp", srv.ProxyAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 1}) // half a ClientHello
		c.Close()
	}
	waitUntil(t, "the handshake errors logged", func() bool {
		return logs.FilterMessageSnippet("TLS handshake error").Len() > 0
	})
	time.Sleep(1100 * time.Millisecond) // the next second says what was dropped
	c, _ := net.Dial("tcp", srv.ProxyAddr().String())
	c.Close()
	waitUntil(t, "the dropped lines said", func() bool {
		return logs.FilterMessageSnippet("were dropped").Len() > 0
	})
	// The log counts by Unix second: a run of 1.2 s from x.9 to x+2.1
	// spans three of them, each with its own allowance.
	seconds := int(time.Now().Unix()-start.Unix()) + 1
	if n := logs.FilterMessageSnippet("TLS handshake error").Len(); n > serverLogLines*seconds {
		t.Fatalf("%d handshake error lines in %d s; want at most %d a second", n, seconds, serverLogLines)
	}
}
