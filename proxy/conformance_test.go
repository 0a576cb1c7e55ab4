package proxy

import (
	"fmt"
	"io"
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The upstream conformance suite. Each case has a raw-socket instance send
// exactly the bytes it names and a raw client send exactly its request;
// it runs through canaryd with the fast path on and with plain
// http.Transport (fast_path: false), and asserts for both: what the client
// gets, what the instance receives, and what the next two clients get on
// the upstream connection the case leaves behind. That last part is the
// one that matters most: whatever an instance sends beyond its answer must
// never become another client's answer (RFC 9112 section 6.3).

// conformanceLimit is the rigs' max response head, smaller than the
// default so that the cases at and over it stay small.
const conformanceLimit = 8192

// evil is a whole answer smuggled after a framed one; no client may get it.
const evil = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Smuggled: yes\r\n\r\nEVIL!"

const plainGET = "GET /case HTTP/1.1\r\nHost: x\r\n\r\n"

// reuse says what must become of the upstream connection after the case.
type reuse int

const (
	anyConn   reuse = iota
	sameConn        // framed exactly: the next request goes on it
	freshConn       // not reusable: the next request goes on a new one
)

type upstreamCase struct {
	name    string
	request string // the client's raw bytes; default plainGET
	method  string // the request's method, to read the answer; default GET
	path    string // the path the instance answers with answer; default /case
	answer  []act  // the instance's bytes for path

	info       []int  // 1xx codes the client must get first
	status     int    // the final status the client must get
	statusIn   []int  // instead of status: any of these (0: the connection closed)
	body       string // its body, exactly (unless anyBody)
	anyBody    bool
	bodyBroken bool // the body must break off (an instance reset)
	// clientClosed: canaryd must close the client's connection after it.
	clientClosed bool
	conn         reuse
	// instance is the paths the instance must receive, in order; default
	// /warm, path, /next-1, /next-2.
	instance []string
	// maxSent bounds how often path may reach the instance; default 1.
	maxSent int
	check   func(t *testing.T, a rawAnswer, got []*rawRequest)
}

func upstreamCases() []upstreamCase {
	okHead := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	// A head of exactly n bytes, body "ok".
	headOf := func(n int) string {
		const start, end = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: ", "\r\n\r\n"
		return start + strings.Repeat("p", n-len(start)-len(end)) + end + "ok"
	}
	hints := "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
	final := func() act { return answer("200 OK", "final") }
	chunkedThenSmuggled := "POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	return []upstreamCase{
		// Framing: bytes beyond the answer, at once or later, never reach anyone.
		{name: "body longer than its Content-Length", answer: []act{send(okHead + evil)}, status: 200, body: "ok", conn: freshConn},
		{name: "body longer than its Content-Length, the rest later", answer: []act{send(okHead), pause(20 * time.Millisecond), send(evil)}, status: 200, body: "ok", conn: freshConn},
		{name: "bytes after the last chunk", answer: []act{send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + evil)}, status: 200, body: "ok", conn: freshConn},
		{name: "a body after a 204", answer: []act{send("HTTP/1.1 204 No Content\r\n\r\n" + evil)}, status: 204, conn: freshConn},
		{name: "a body after a 304", answer: []act{send("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n" + evil)}, status: 304, conn: freshConn},
		{name: "a body after a HEAD answer", request: "HEAD /case HTTP/1.1\r\nHost: x\r\n\r\n", method: "HEAD",
			answer: []act{send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")}, status: 200, conn: freshConn},
		{name: "a body after a HEAD answer, sent later", request: "HEAD /case HTTP/1.1\r\nHost: x\r\n\r\n", method: "HEAD",
			answer: []act{send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), pause(20 * time.Millisecond), send(evil)}, status: 200, conn: freshConn},
		{name: "bytes after a 101 to a request that asked for no upgrade",
			answer: []act{send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + evil)}, status: 502, anyBody: true, conn: freshConn},
		{name: "a 101 naming no protocol to a plain request",
			answer: []act{send("HTTP/1.1 101 Switching Protocols\r\n\r\n" + evil)}, status: 502, anyBody: true, conn: freshConn},
		{name: "an answer nobody asked for on an idle connection", answer: []act{send(okHead), pause(20 * time.Millisecond), send(evil)}, status: 200, body: "ok", conn: freshConn},
		{name: "a 408 on an idle connection", answer: []act{send(okHead), pause(20 * time.Millisecond),
			send("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"), closeConn()}, status: 200, body: "ok", conn: freshConn},
		{name: "an idle connection the instance closed", answer: []act{send(okHead), pause(20 * time.Millisecond), closeConn()}, status: 200, body: "ok", conn: freshConn},
		{name: "a well-framed answer", answer: []act{send(okHead)}, status: 200, body: "ok", conn: sameConn},
		{name: "a chunked answer", answer: []act{send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n")}, status: 200, body: "ok!!!", conn: sameConn},

		// Informational answers.
		{name: "one 103", answer: []act{send(hints), final()}, info: []int{103}, status: 200, body: "final", conn: sameConn},
		{name: "several 1xx", answer: []act{send("HTTP/1.1 102 Processing\r\n\r\n" + hints), send(hints), final()}, info: []int{102, 103, 103}, status: 200, body: "final", conn: sameConn},
		{name: "a slow final answer after a 1xx", answer: []act{send(hints), pause(300 * time.Millisecond), final()}, info: []int{103}, status: 200, body: "final", conn: sameConn},
		{name: "more 1xx than the limit", answer: []act{send(strings.Repeat(hints, Max1xx+1)), final()},
			info: []int{103, 103, 103, 103, 103}, status: 502, anyBody: true, conn: freshConn},

		// Heads at and over the limit.
		{name: "a head at the limit", answer: []act{send(headOf(conformanceLimit))}, status: 200, body: "ok", conn: sameConn},
		{name: "a head one byte over the limit", answer: []act{send(headOf(conformanceLimit + 1))}, status: 502, anyBody: true, conn: freshConn},
		{name: "a 4 MiB head", answer: []act{send(headOf(4 << 20))}, status: 502, anyBody: true, conn: freshConn},

		// Length and coding conflicts in answers.
		{name: "Content-Length and chunked in one answer", answer: []act{send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")},
			status: 200, body: "hello", check: func(t *testing.T, a rawAnswer, _ []*rawRequest) {
				if cl := a.header.Get("Content-Length"); cl == "100" {
					t.Error("the conflicting Content-Length reached the client")
				}
			}},
		{name: "two different Content-Lengths", answer: []act{send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 7\r\n\r\nok" + evil)}, status: 502, anyBody: true, conn: freshConn},
		{name: "a Content-Length that is no number", answer: []act{send("HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok")}, status: 502, anyBody: true, conn: freshConn},
		{name: "an unknown transfer coding", answer: []act{send("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok")}, status: 502, anyBody: true, conn: freshConn},
		{name: "a status under 100", answer: []act{send("HTTP/1.1 042 Odd\r\nContent-Length: 2\r\n\r\nok")}, status: 502, anyBody: true},
		{name: "a bare LF head", answer: []act{send("HTTP/1.1 200 OK\nContent-Length: 2\n\nok")}, status: 200, body: "ok"},

		// Bodiless answers, well formed.
		{name: "HEAD", request: "HEAD /case HTTP/1.1\r\nHost: x\r\n\r\n", method: "HEAD",
			answer: []act{send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")}, status: 200, conn: sameConn},
		{name: "204", answer: []act{send("HTTP/1.1 204 No Content\r\n\r\n")}, status: 204, conn: sameConn},
		{name: "304", answer: []act{send("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")}, status: 304, conn: sameConn},

		// Upgrades refused (answered ones: TestUpgradeAnsweredTunnels).
		{name: "an upgrade refused", request: "GET /case HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			answer: []act{answer("400 Bad Request", "no upgrade")}, status: 400, body: "no upgrade"},

		// Other endings.
		{name: "a body read to the close", answer: []act{send("HTTP/1.1 200 OK\r\n\r\nuntil close"), closeConn()}, status: 200, body: "until close", conn: freshConn},
		{name: "Connection: close", answer: []act{send("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"), closeConn()}, status: 200, body: "ok", conn: freshConn},
		// Past the server's write buffer, so that the client has the head
		// when the body breaks; a smaller answer is dropped whole.
		{name: "a reset mid-body", answer: []act{send("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + strings.Repeat("0123456789", 10000)), pause(20 * time.Millisecond), resetConn()},
			status: 200, bodyBroken: true, conn: freshConn},
		{name: "a reset mid-body, early", answer: []act{send("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"), pause(20 * time.Millisecond), resetConn()},
			status: 0, conn: freshConn},
		{name: "a close without an answer", answer: []act{closeConn()}, status: 502, anyBody: true, conn: freshConn, maxSent: 2},
		{name: "an early answer before the request body is read",
			request: "POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + strings.Repeat("b", 200000), method: "POST", path: "/early",
			answer: []act{send("HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big\n"), {drain: true}, closeConn()},
			status: 413, body: "too big\n", conn: freshConn},

		// Client-side shapes: what the client sends after its request never
		// reaches the instance as a request of its own.
		{name: "a chunked request", request: chunkedThenSmuggled, method: "POST", answer: []act{send(okHead)}, status: 200, body: "ok", clientClosed: true,
			check: bodyWas("hello")},
		{name: "a chunked request answered after a 1xx", request: chunkedThenSmuggled, method: "POST", answer: []act{send(hints), send(okHead)},
			info: []int{103}, status: 200, body: "ok", clientClosed: true, check: bodyWas("hello")},
		{name: "Content-Length and chunked in one request", request: "POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
			method: "POST", answer: []act{send(okHead)}, status: 200, body: "ok", clientClosed: true, check: bodyWas("hello")},
		{name: "two Content-Lengths in a request", request: "POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", method: "POST",
			status: 400, anyBody: true, instance: []string{"/warm", "/next-1", "/next-2"}},
		{name: "an absolute-form target", request: "GET http://x/case HTTP/1.1\r\nHost: elsewhere\r\n\r\n", answer: []act{send(okHead)}, status: 200, body: "ok",
			check: func(t *testing.T, _ rawAnswer, got []*rawRequest) {
				if r := find(got, "/case"); r == nil || r.Host != "x" {
					t.Errorf("the instance saw %+v; want Host x, the target's", r)
				}
			}},
		// Refused before any instance is chosen, whichever the path.
		// Go's server reads bare-LF chunk lines leniently, then finds the
		// body malformed: the instance gets the request, never whole.
		{name: "a bare-LF chunked body", request: "POST /case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", method: "POST",
			statusIn: []int{400, 0}, anyBody: true, check: func(t *testing.T, _ rawAnswer, got []*rawRequest) {
				if r := find(got, "/case"); r != nil && r.BodyErr == nil {
					t.Errorf("the instance got a complete request: %+v", r)
				}
			}},
		refused("oversized request headers", "GET /case HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 2<<20)+"\r\n\r\n", 431, 0),
		refused("a control character in Upgrade", "GET /case HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: web\x01socket\r\n\r\n", 400, 0),
		refused("Upgrade: web socket", "GET /case HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: web socket\r\n\r\n", 400),
		refused("an absolute-form target with userinfo", "GET http://u:p@x/case HTTP/1.1\r\nHost: x\r\n\r\n", 400),
		refused("an absolute-form target of another scheme", "GET ftp://x/case HTTP/1.1\r\nHost: x\r\n\r\n", 400),
		refused("CONNECT", "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 400, 405, 0),
		refused("an invalid method", "G(T /case HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0),
		refused("no Host", "GET /case HTTP/1.1\r\n\r\n", 400, 0),
		refused("an unknown HTTP version", "GET /case HTTP/9.9\r\nHost: x\r\n\r\n", 505, 400, 0),
		refused("a header without a colon", "GET /case HTTP/1.1\r\nHost: x\r\nBroken header\r\n\r\n", 400, 0),
		refused("NUL in the target", "GET /case\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0),
		refused("a negative Content-Length", "POST /case HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, 0),
		{name: "an Upgrade list with empty elements", request: "GET /case HTTP/1.1\r\nHost: x\r\nUpgrade: , websocket, , h2c\r\n\r\n",
			answer: []act{send(okHead)}, status: 200, body: "ok"},
	}
}

// refused is a client request that must never reach the instance.
func refused(name, raw string, statuses ...int) upstreamCase {
	return upstreamCase{name: name, request: raw, statusIn: statuses, anyBody: true, instance: []string{"/warm", "/next-1", "/next-2"}}
}

func bodyWas(want string) func(*testing.T, rawAnswer, []*rawRequest) {
	return func(t *testing.T, _ rawAnswer, got []*rawRequest) {
		if r := find(got, "/case"); r == nil || r.Body != want || r.BodyErr != nil {
			t.Errorf("the instance got %+v; want the body %q", r, want)
		}
	}
}

func find(reqs []*rawRequest, path string) *rawRequest {
	for _, r := range reqs {
		if r.Path == path {
			return r
		}
	}
	return nil
}

// goodAnswer is how the instance answers everything but the case's path.
func goodAnswer(r *rawRequest) []act {
	return []act{answer("200 OK", r.Path+" answered")}
}

func TestUpstreamConformance(t *testing.T) {
	for _, tc := range upstreamCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, fast := range []bool{true, false} {
				t.Run(pathName(fast), func(t *testing.T) { runUpstreamCase(t, tc, fast) })
			}
		})
	}
}

func pathName(fast bool) string {
	if fast {
		return "fast path"
	}
	return "http.Transport"
}

// conformanceRig is canaryd's handler on a real server in front of in.
func conformanceRig(t *testing.T, in *rawInstance, fast bool) string {
	tr := NewTransport(TransportOptions{DisableFastPath: !fast, ResponseHeaderTimeout: 2 * time.Second, MaxResponseHeaderBytes: conformanceLimit})
	r := newRig(t, Options{Transport: tr}, routeSpec(t, pool{"blue", 10000, []string{in.URL}}))
	return strings.TrimPrefix(r.srv.URL, "http://")
}

func runUpstreamCase(t *testing.T, tc upstreamCase, fast bool) {
	if tc.request == "" {
		tc.request = plainGET
	}
	if tc.method == "" {
		tc.method = http.MethodGet
	}
	if tc.path == "" {
		tc.path = "/case"
	}
	if tc.instance == nil {
		tc.instance = []string{"/warm", tc.path, "/next-1", "/next-2"}
	}
	if tc.maxSent == 0 {
		tc.maxSent = 1
	}
	in := newRawInstance(t, func(r *rawRequest) []act {
		if r.Path == tc.path {
			return tc.answer
		}
		return goodAnswer(r)
	})
	addr := conformanceRig(t, in, fast)

	// /warm leaves one idle upstream connection, which the case then uses.
	if a := rawClient(t, addr, "GET /warm HTTP/1.1\r\nHost: x\r\n\r\n", "GET"); a.status != 200 || a.body != "/warm answered" {
		t.Fatalf("warm-up: %+v", a)
	}
	in.waitActed(t, "/warm")

	a := rawExchange(t, addr, tc.request, tc.method, tc.clientClosed)
	if !reflect.DeepEqual(a.informational, tc.info) {
		t.Errorf("1xx answers %v, want %v", a.informational, tc.info)
	}
	if tc.statusIn != nil && !slices.Contains(tc.statusIn, a.status) {
		t.Errorf("status %d, want one of %v (body %q)", a.status, tc.statusIn, a.body)
	} else if tc.statusIn == nil && a.status != tc.status {
		t.Errorf("status %d, want %d (body %q)", a.status, tc.status, a.body)
	}
	switch {
	case tc.bodyBroken:
		if a.bodyErr == nil {
			t.Errorf("the body %q ended cleanly; it must break off as the instance's did", a.body)
		}
	case a.bodyErr != nil:
		t.Errorf("the body broke off: %v", a.bodyErr)
	case !tc.anyBody && a.body != tc.body:
		t.Errorf("body %q, want %q", a.body, tc.body)
	}
	if strings.Contains(a.body, "EVIL") || a.header.Get("X-Smuggled") != "" {
		t.Errorf("the client got smuggled bytes: %q %v", a.body, a.header)
	}
	if tc.clientClosed && a.status != 0 && !a.closed {
		t.Error("the client's connection stayed open; what it sent after the request could be read as another")
	}
	if tc.path == tc.instance[1] {
		in.waitActed(t, tc.path)
	}
	// Late bytes and closes land, and http.Transport's reader (the
	// reference) wakes to them, before the next request: generously when
	// the instance sent some after a pause, as a loaded machine may be slow
	// to run that reader.
	settle := 20 * time.Millisecond
	for _, a := range tc.answer {
		if a.pause > 0 {
			settle = 150 * time.Millisecond
		}
	}
	time.Sleep(settle)

	// The next two clients get their own answers, whatever the case left.
	for _, next := range []string{"/next-1", "/next-2"} {
		b := rawClient(t, addr, "GET "+next+" HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
		if b.status != 200 || b.body != next+" answered" || b.header.Get("X-Smuggled") != "" {
			t.Errorf("the next client (%s) got %d %q %v; want its own answer", next, b.status, b.body, b.header)
		}
		in.waitActed(t, next)
	}

	got := in.requests()
	var paths []string
	sent := 0
	for _, r := range got {
		if r.Path == tc.path {
			sent++
			if sent > 1 {
				continue // counted, listed once
			}
		}
		paths = append(paths, r.Path)
	}
	if sent > tc.maxSent {
		t.Errorf("%s reached the instance %d times, at most %d allowed", tc.path, sent, tc.maxSent)
	}
	if !reflect.DeepEqual(paths, tc.instance) {
		t.Errorf("the instance received %q, want %q", paths, tc.instance)
	}
	if c, n := find(got, tc.path), find(got, "/next-1"); c != nil && n != nil {
		switch {
		case tc.conn == sameConn && n.Conn != c.Conn:
			t.Errorf("the next request went on a new connection; %s's was framed exactly and could be reused", tc.path)
		case tc.conn == freshConn && n.Conn == c.Conn:
			t.Errorf("the next request reused %s's connection, which was not fit for reuse", tc.path)
		}
	}
	if tc.check != nil {
		tc.check(t, a, got)
	}
}

// An upgrade the instance accepts becomes a tunnel on both paths (upgrades
// always take http.Transport; the fast path must not stand in the way).
func TestUpgradeAnsweredTunnels(t *testing.T) {
	for _, fast := range []bool{true, false} {
		t.Run(pathName(fast), func(t *testing.T) {
			in := newRawInstance(t, func(r *rawRequest) []act {
				return []act{send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), {echo: true}}
			})
			addr := conformanceRig(t, in, fast)
			c, br := dialRaw(t, addr)
			fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			if a := readRawAnswer(br, "GET"); a.status != 101 {
				t.Fatalf("status %d, want 101", a.status)
			}
			fmt.Fprint(c, "ping through the tunnel")
			buf := make([]byte, len("ping through the tunnel"))
			if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping through the tunnel" {
				t.Errorf("tunnel echoed %q, %v", buf, err)
			}
		})
	}
}

// An absolute-form target is routed by its authority: a conflicting Host
// header cannot pick another route (RFC 9112 section 3.2.2).
func TestAbsoluteFormRoutesByTheTarget(t *testing.T) {
	a := newRawInstance(t, func(r *rawRequest) []act { return []act{answer("200 OK", "a:"+r.Host)} })
	b := newRawInstance(t, func(r *rawRequest) []act { return []act{answer("200 OK", "b:"+r.Host)} })
	ra, rb := routeSpec(t, pool{"blue", 10000, []string{a.URL}}), routeSpec(t, pool{"blue", 10000, []string{b.URL}})
	ra.Name, ra.Host = "a", "a.example"
	rb.Name, rb.Host = "b", "b.example"
	r := newRig(t, Options{}, ra, rb)
	addr := strings.TrimPrefix(r.srv.URL, "http://")
	for _, tc := range []struct{ raw, want string }{
		{"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n", "a:a.example"},
		{"GET http://b.example:80/x HTTP/1.1\r\nHost: a.example\r\n\r\n", "b:b.example:80"},
		{"GET /x HTTP/1.1\r\nHost: b.example\r\n\r\n", "b:b.example"},
	} {
		if got := rawClient(t, addr, tc.raw, "GET"); got.status != 200 || got.body != tc.want {
			t.Errorf("%q: %d %q, want %q", tc.raw, got.status, got.body, tc.want)
		}
	}
}

// An instance that reads requests and hangs up on them, over many pooled
// connections: the fast path sends a GET once more on a new connection and
// no more (it sent it 17 times over stale connections before). Plain
// http.Transport resends on every pooled connection it finds closed this
// way; docs/config.md says so.
func TestStaleConnectionRetryIsBounded(t *testing.T) {
	release := make(chan struct{})
	in := newRawInstance(t, func(r *rawRequest) []act {
		switch r.Path {
		case "/hold":
			<-release
			return goodAnswer(r)
		case "/drop":
			return []act{closeConn()}
		}
		return goodAnswer(r)
	})
	addr := conformanceRig(t, in, true)
	// Eight requests at once leave eight idle connections.
	done := make(chan rawAnswer)
	for i := 0; i < 8; i++ {
		go func() { done <- rawClient(t, addr, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n", "GET") }()
	}
	for deadline := time.Now().Add(5 * time.Second); len(in.requests()) < 8 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	for i := 0; i < 8; i++ {
		if a := <-done; a.status != 200 {
			t.Fatalf("warm-up: %+v", a)
		}
	}
	if a := rawClient(t, addr, "GET /drop HTTP/1.1\r\nHost: x\r\n\r\n", "GET"); a.status != 502 {
		t.Errorf("status %d, want 502", a.status)
	}
	sent := 0
	for _, p := range in.paths() {
		if p == "/drop" {
			sent++
		}
	}
	if sent > 2 {
		t.Errorf("the GET reached the instance %d times; once more is the bound", sent)
	}
}

// A head far over the limit costs about the limit in memory, not the
// head's size (a 300 MB head was once relayed whole).
func TestHugeAnswerHeadCostsBoundedMemory(t *testing.T) {
	for _, fast := range []bool{true, false} {
		t.Run(pathName(fast), func(t *testing.T) {
			const size = 64 << 20
			head := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", size) + "\r\nContent-Length: 2\r\n\r\nok"
			answer := []act{send(head)}
			in := newRawInstance(t, func(r *rawRequest) []act { return answer })
			tr := NewTransport(TransportOptions{DisableFastPath: !fast}) // the default limit, 64 KiB
			r := newRig(t, Options{Transport: tr}, routeSpec(t, pool{"blue", 10000, []string{in.URL}}))
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			if resp, _ := r.get(t, "/", nil); resp.StatusCode != http.StatusBadGateway {
				t.Errorf("status %d, want 502", resp.StatusCode)
			}
			runtime.ReadMemStats(&after)
			grew := after.TotalAlloc - before.TotalAlloc
			t.Logf("allocated %d KiB for a %d MiB head", grew>>10, size>>20)
			if grew > 8<<20 {
				t.Errorf("the request allocated %d MiB for a %d MiB head; the limit is 64 KiB", grew>>20, size>>20)
			}
		})
	}
}

// A forced preview whose instance cannot be reached is a 502 from that
// pool, never an answer from another pool.
func TestForcedPreviewIsNotRetriedOnAnotherPool(t *testing.T) {
	blue := backend(t, "blue")
	s := routeSpec(t, pool{"blue", 10000, []string{blue.URL}}, pool{"green", 0, []string{deadAddr(t)}})
	s.ForceHeader = "X-Canary-Pool"
	r := newRig(t, Options{}, s)
	for i := 0; i < 5; i++ {
		if resp, body := r.get(t, "/", http.Header{"X-Canary-Pool": {"green"}}); resp.StatusCode != http.StatusBadGateway || body == "blue" {
			t.Fatalf("forced to green (unreachable): %d %q; want a 502, not blue's answer", resp.StatusCode, body)
		}
	}
	// Unforced requests still get the retry on another instance.
	s2 := routeSpec(t, pool{"blue", 10000, []string{deadAddr(t), blue.URL}})
	r2 := newRig(t, Options{}, s2)
	for i := 0; i < 4; i++ {
		if resp, body := r2.get(t, "/", nil); resp.StatusCode != 200 || body != "blue" {
			t.Fatalf("unforced: %d %q", resp.StatusCode, body)
		}
	}
}

// An instance that answers an upload before reading it, then reads it
// slowly: http.Transport goes on writing the request after the answer has
// been relayed and the handler has returned. Nothing of the request may be
// pooled and reused meanwhile (the request id, the body's wrapper): under
// -race a reuse is reported, and a zeroed body wrapper would crash the
// transport's writer.
func TestEarlyAnswerWhileTheUploadStreams(t *testing.T) {
	in := newRawInstance(t, func(r *rawRequest) []act {
		if !strings.HasPrefix(r.Path, earlyPrefix) {
			return goodAnswer(r)
		}
		// Answer at once, then leave the upload unread for a while: the
		// transport's writer blocks on a full socket and reads the body
		// again only after the handler has returned.
		return []act{answer("200 OK", "early"), pause(300 * time.Millisecond), {drain: true}}
	})
	r := newRig(t, Options{}, routeSpec(t, pool{"blue", 10000, []string{in.URL}}))
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr, pw := io.Pipe()
			go func() {
				chunk := strings.Repeat("u", 64<<10)
				for j := 0; j < 256; j++ { // 16 MiB, more than the sockets hold
					if _, err := io.WriteString(pw, chunk); err != nil {
						return
					}
				}
				pw.Close()
			}()
			req, _ := http.NewRequest("POST", r.srv.URL+earlyPrefix+"/upload", pr)
			resp, err := r.client.Do(req)
			if err != nil {
				pr.CloseWithError(err)
				return // canaryd may close an upload it no longer needs
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "early" {
				t.Errorf("got %d %q", resp.StatusCode, b)
			}
			// More requests at once, to take the pooled states.
			for k := 0; k < 20; k++ {
				r.get(t, "/", nil)
			}
			time.Sleep(400 * time.Millisecond) // the instance reads the upload again
			pr.CloseWithError(io.ErrClosedPipe)
		}()
	}
	wg.Wait()
}
