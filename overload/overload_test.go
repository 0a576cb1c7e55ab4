package overload

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/proxyproto"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDerive(t *testing.T) {
	for _, tc := range []struct {
		name   string
		set    Limits
		nofile int
		want   Limits
	}{
		{"20000 descriptors", Limits{}, 20000, Limits{7500, 1875, 7500, 1875}},
		{"1024 descriptors", Limits{}, 1024, Limits{384, 96, 384, 96}},
		{"tiny", Limits{}, 40, Limits{16, 4, 16, 4}},
		{"unlimited is capped", Limits{}, 1 << 40, Limits{6291456, 1572864, 6291456, 1572864}},
		{"explicit kept", Limits{100, 10, 50, 5}, 20000, Limits{100, 10, 50, 5}},
		{"per client from explicit total", Limits{MaxConnections: 100, MaxRequestsInFlight: 40}, 20000, Limits{100, 25, 40, 10}},
		{"per client above derived total lowered", Limits{MaxConnectionsPerClient: 9000}, 20000, Limits{7500, 7500, 7500, 1875}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Derive(tc.set, tc.nofile); got != tc.want {
				t.Fatalf("Derive(%+v, %d) = %+v; want %+v", tc.set, tc.nofile, got, tc.want)
			}
		})
	}
}

func TestClientOf(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		trusted      []netip.Prefix
		want         string
	}{
		{"peer", "192.0.2.1:5000", nil, nil, "192.0.2.1"},
		{"xff ignored from untrusted peer", "192.0.2.1:5000", []string{"198.51.100.7"}, trusted, "192.0.2.1"},
		{"xff from trusted peer", "10.1.1.1:5000", []string{"198.51.100.7"}, trusted, "198.51.100.7"},
		{"nearest untrusted", "10.1.1.1:5000", []string{"203.0.113.9, 198.51.100.7, 10.2.2.2"}, trusted, "198.51.100.7"},
		{"several headers", "10.1.1.1:5000", []string{"203.0.113.9", "198.51.100.7,10.2.2.2"}, trusted, "198.51.100.7"},
		{"all trusted", "10.1.1.1:5000", []string{"10.3.3.3"}, trusted, "10.1.1.1"},
		{"garbage counts the proxy", "10.1.1.1:5000", []string{"not-an-ip"}, trusted, "10.1.1.1"},
		{"no xff", "10.1.1.1:5000", nil, trusted, "10.1.1.1"},
		{"ipv6 peer", "[::1]:5000", []string{"2001:db8::1"}, trusted, "2001:db8::1"},
		{"mapped", "[::ffff:192.0.2.1]:5000", nil, nil, "192.0.2.1"},
		{"no ip", "pipe", nil, nil, "invalid IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.xff {
				h.Add("X-Forwarded-For", v)
			}
			if got := ClientOf(tc.remote, h, tc.trusted).String(); got != tc.want {
				t.Fatalf("ClientOf = %s; want %s", got, tc.want)
			}
		})
	}
}

func TestCountsShareNoEntryAfterRelease(t *testing.T) {
	c := newCounts()
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 3 {
		if !c.acquire(a, 3) {
			t.Fatalf("acquire %d refused", i)
		}
	}
	if c.acquire(a, 3) {
		t.Fatal("a fourth acquire passed a limit of 3")
	}
	for range 3 {
		c.release(a)
	}
	// An IPv6 client counts by its /64: two addresses of one prefix share
	// a count, another prefix has its own.
	v6a, v6b, other := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9"), netip.MustParseAddr("2001:db8:1:3::1")
	if !c.acquire(v6a, 2) || !c.acquire(v6b, 2) || c.acquire(v6a, 2) {
		t.Fatal("two addresses of one /64 are not counted as one client")
	}
	if !c.acquire(other, 2) {
		t.Fatal("another /64 was refused")
	}
	c.release(v6a)
	c.release(v6b)
	c.release(other)
	if n := len(c.shard(a).m); n != 0 {
		t.Fatalf("%d entries left after every release", n)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		c.acquire(a, 3)
		c.release(a)
	})
	if allocs != 0 {
		t.Fatalf("acquire and release allocate %v times", allocs)
	}
}

// listen is a loopback listener on ip.
func listen(t *testing.T, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialFrom connects to addr from the local address ip.
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// served is an echo server of one byte per connection behind ln.
func served(t *testing.T, ln net.Listener) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				b := make([]byte, 1)
				for {
					if _, err := c.Read(b); err != nil {
						return
					}
					c.Write(b)
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// alive reports whether c echoes a byte (false: closed by the server).
func alive(c net.Conn) bool {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return false
	}
	b := make([]byte, 1)
	_, err := c.Read(b)
	return err == nil
}

func TestListenerLimits(t *testing.T) {
	var refusals sync.Map
	count := func(l Limit, _ netip.Addr) {
		n, _ := refusals.LoadOrStore(l, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	ln := NewListener(listen(t, "127.0.0.1"), ListenerOptions{
		Max: 6, MaxPerClient: 3, Refused: count,
		Exempt: func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.3") },
	})
	served(t, ln)
	addr := ln.Addr().String()
	var held []net.Conn
	for range 3 {
		c := dialFrom(t, "127.0.0.1", addr)
		if !alive(c) {
			t.Fatal("a connection within the per-client limit was closed")
		}
		held = append(held, c)
	}
	if alive(dialFrom(t, "127.0.0.1", addr)) {
		t.Fatal("a fourth connection from 127.0.0.1 was served; the per-client limit is 3")
	}
	// Another client still gets in, and an exempt one past 3.
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.3"} {
		if !alive(dialFrom(t, ip, addr)) {
			t.Fatalf("a connection from %s was refused with room left", ip)
		}
	}
	if alive(dialFrom(t, "127.0.0.3", addr)) {
		t.Fatal("a seventh connection was served; max_connections is 6")
	}
	// A closed connection gives its room back.
	held[0].Close()
	waitFor(t, func() bool { return ln.OpenFrom(netip.MustParseAddr("127.0.0.1")) == 2 })
	if !alive(dialFrom(t, "127.0.0.1", addr)) {
		t.Fatal("no room after a connection closed")
	}
	for _, l := range []Limit{MaxConnections, MaxConnectionsPerClient} {
		if n, ok := refusals.Load(l); !ok || n.(*atomic.Int64).Load() != 1 {
			t.Errorf("refusals of %s not counted once: %v", l, n)
		}
	}
}

func TestListenerCountsTheClientOfAPROXYHeader(t *testing.T) {
	lb := netip.MustParseAddr("127.0.0.1")
	pp := &proxyproto.Listener{Listener: listen(t, "127.0.0.1"), Trusted: func(a netip.Addr) bool { return a == lb }}
	ln := NewListener(pp, ListenerOptions{Max: 100, MaxPerClient: 2, Exempt: func(a netip.Addr) bool { return a == lb }})
	served(t, ln)
	header := func(client string) []byte {
		return []byte(fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 5000 80\r\n", client))
	}
	open := func(client string) net.Conn {
		c := dialFrom(t, "127.0.0.1", ln.Addr().String())
		c.Write(header(client))
		return c
	}
	a1, a2 := open("198.51.100.1"), open("198.51.100.1")
	if !alive(a1) || !alive(a2) {
		t.Fatal("two connections of one client within the limit were closed")
	}
	if alive(open("198.51.100.1")) {
		t.Fatal("a third connection naming the same client was served; the per-client limit is 2")
	}
	if !alive(open("198.51.100.2")) {
		t.Fatal("another client behind the same balancer was refused")
	}
	// The balancer's own connections (health checks, no header) are exempt.
	for range 3 {
		if !alive(dialFrom(t, "127.0.0.1", ln.Addr().String())) {
			t.Fatal("the trusted balancer's own connection was refused")
		}
	}
}

func TestHandlerLimits(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 16)
	var refused atomic.Int64
	h := NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}), HandlerOptions{Max: 3, MaxPerClient: 2, Refused: func(Limit, netip.Addr) { refused.Add(1) }})
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = listen(t, "127.0.0.1")
	srv.Start()
	defer srv.Close()
	client := func(ip string) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext,
		}}
	}
	get := func(c *http.Client) <-chan int {
		ch := make(chan int, 1)
		go func() {
			resp, err := c.Get(srv.URL)
			if err != nil {
				ch <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "" {
				ch <- -1
				return
			}
			ch <- resp.StatusCode
		}()
		return ch
	}
	one, two := client("127.0.0.1"), client("127.0.0.2")
	defer one.CloseIdleConnections()
	defer two.CloseIdleConnections()
	held := []<-chan int{get(one), get(one)}
	<-entered
	<-entered
	if s := <-get(one); s != 503 {
		t.Fatalf("a third request from one client: %d; want 503 with Retry-After", s)
	}
	held = append(held, get(two))
	<-entered
	if s := <-get(two); s != 503 {
		t.Fatalf("a fourth request in all: %d; want 503 (max 3)", s)
	}
	close(release)
	for _, ch := range held {
		if s := <-ch; s != 200 {
			t.Fatalf("a held request ended %d", s)
		}
	}
	if h.InFlight() != 0 || refused.Load() != 2 {
		t.Fatalf("in flight %d, refused %d; want 0 and 2", h.InFlight(), refused.Load())
	}
	if s := <-get(one); s != 200 {
		t.Fatalf("after the others ended: %d", s)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met in 5s")
}

// BenchmarkHandler is the cost the limits add to a request under them:
// two atomics, a parse of RemoteAddr and a shard lock twice.
func BenchmarkHandler(b *testing.B) {
	h := NewHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), HandlerOptions{Max: 1 << 20, MaxPerClient: 1 << 20})
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "192.0.2.1:5000"
	w := httptest.NewRecorder()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.ServeHTTP(w, r)
		}
	})
}

// BenchmarkHandlerOneClient is the same on one goroutine: the cost added
// to each request, without contention.
func BenchmarkHandlerOneClient(b *testing.B) {
	h := NewHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), HandlerOptions{Max: 1 << 20, MaxPerClient: 1 << 20})
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "192.0.2.1:5000"
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

// FuzzClientOf: any X-Forwarded-For from a trusted peer gives the peer or
// an address written in it that is not trusted; never a panic.
func FuzzClientOf(f *testing.F) {
	for _, s := range []string{"198.51.100.7", "203.0.113.9, 198.51.100.7, 10.2.2.2", "10.3.3.3", "not-an-ip", "", ",,,", "2001:db8::1", "::ffff:192.0.2.1", "1.2.3.4,", " 1.2.3.4 , 10.0.0.1"} {
		f.Add(s)
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	f.Fuzz(func(t *testing.T, xff string) {
		h := http.Header{"X-Forwarded-For": {xff}}
		got := ClientOf("10.1.1.1:5000", h, trusted)
		if got == netip.MustParseAddr("10.1.1.1") {
			return
		}
		if contains(trusted, got) || !got.IsValid() {
			t.Fatalf("ClientOf(%q) = %v: a trusted or invalid address", xff, got)
		}
		if !strings.Contains(xff, got.String()) && !strings.Contains(xff, "::ffff:"+got.String()) {
			ok := false
			for _, part := range strings.Split(xff, ",") {
				if a, err := netip.ParseAddr(strings.TrimSpace(part)); err == nil && a.Unmap() == got {
					ok = true
				}
			}
			if !ok {
				t.Fatalf("ClientOf(%q) = %v, which it does not name", xff, got)
			}
		}
	})
}
