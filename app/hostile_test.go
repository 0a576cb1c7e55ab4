package app

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawExchange writes raw bytes to addr and returns the status code of the
// answer, or 0 when the connection closed without one.
func rawExchange(t *testing.T, addr, raw string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(raw)); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// seen is what a backend received of one request.
type seen struct {
	path, te, cl, body string
	bodyErr            error
}

type recordingBackend struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newRecordingBackend(t *testing.T) *recordingBackend {
	b := &recordingBackend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		b.mu.Lock()
		b.reqs = append(b.reqs, seen{r.URL.Path, strings.Join(r.TransferEncoding, ","), r.Header.Get("Content-Length"), string(body), err})
		b.mu.Unlock()
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *recordingBackend) since(n int) []seen {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seen(nil), b.reqs[n:]...)
}

func (b *recordingBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.reqs)
}

// Malformed and hostile HTTP written raw on a socket: no panic; each is
// answered 4xx (505 for an unknown HTTP version) or closed. Most never
// reach a backend. Two ambiguous framings that RFC 9112 lets a server
// resolve (Content-Length with Transfer-Encoding: chunked wins; bare-LF
// chunk lines) are resolved by Go's server before canaryd sees them, and
// reach the backend only as one request re-framed by canaryd, or not
// complete: never as two requests, never with the ambiguity.
func TestHostileRequests(t *testing.T) {
	be := newRecordingBackend(t)
	path := oneRouteConfig(t, `server: { max_header_bytes: 16384 }`, "", be.URL)
	r := startRig(t, path)
	addr := strings.TrimPrefix(r.proxy, "http://")
	big := strings.Repeat("a", 70000)
	const never, reframed, incomplete = "never", "re-framed", "incomplete"
	for _, tc := range []struct {
		name, raw string
		status    []int // any of these; 0 is a closed connection
		backend   string
	}{
		{"Content-Length with Transfer-Encoding", "POST /cl-te HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", []int{200, 400, 0}, reframed},
		{"duplicate Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", []int{400, 0}, never},
		{"bare LF chunked body", "POST /bare-lf HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", []int{400, 0}, incomplete},
		{"oversized headers", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n", []int{431}, never},
		{"bad upgrade token", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: web\x01socket\r\n\r\n", []int{400, 0}, never},
		{"upgrade token with a space", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: web socket\r\n\r\n", []int{400}, never},
		{"absolute-form target with userinfo", "GET http://user:pw@other.example/ HTTP/1.1\r\nHost: x\r\n\r\n", []int{400}, never},
		{"absolute-form target of another scheme", "GET ftp://other.example/ HTTP/1.1\r\nHost: x\r\n\r\n", []int{400}, never},
		{"CONNECT", "CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n", []int{400, 405, 0}, never},
		{"invalid method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", []int{400, 0}, never},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", []int{400, 0}, never},
		{"unknown HTTP version", "GET / HTTP/9.9\r\nHost: x\r\n\r\n", []int{505, 400, 0}, never},
		{"header without colon", "GET / HTTP/1.1\r\nHost: x\r\nBroken header\r\n\r\n", []int{400, 0}, never},
		{"NUL in the target", "GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", []int{400, 0}, never},
		{"negative Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", []int{400, 0}, never},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := be.count()
			code := rawExchange(t, addr, tc.raw)
			ok := false
			for _, s := range tc.status {
				ok = ok || code == s
			}
			if !ok {
				t.Errorf("answered %d; want one of %v", code, tc.status)
			}
			time.Sleep(50 * time.Millisecond) // let the backend finish reading
			got := be.since(before)
			switch tc.backend {
			case never:
				if len(got) != 0 {
					t.Errorf("reached the backend: %+v", got)
				}
			case reframed:
				if len(got) != 1 || got[0].path != "/cl-te" || got[0].cl != "" || got[0].body != "hello" || got[0].bodyErr != nil {
					t.Errorf("backend saw %+v; want only /cl-te, chunked-decoded, no Content-Length (nothing smuggled)", got)
				}
			case incomplete:
				for _, g := range got {
					if g.bodyErr == nil {
						t.Errorf("backend received a complete request: %+v", g)
					}
				}
			}
		})
	}
	// Still serving, and no client's mistake counted against the instance.
	if code := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); code != 200 {
		t.Errorf("a normal request after all that: %d", code)
	}
	if in := r.srv.router.Load().Route("web").Pools[0].Instances[0]; !in.Available() {
		t.Error("hostile clients got a healthy instance ejected")
	}
}

// A body over the limit is refused with 413 without being buffered: at once
// for a declared length, mid-stream for a chunked one. A large allowed
// upload streams through.
func TestRequestBodyLimit(t *testing.T) {
	be := newRecordingBackend(t)
	path := oneRouteConfig(t, `server: { max_request_body_bytes: 1048576 }`, "", be.URL)
	r := startRig(t, path)
	post := func(body io.Reader, length int64) int {
		req, _ := http.NewRequest(http.MethodPost, r.proxy+"/upload", body)
		req.ContentLength = length
		resp, err := r.client.Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	before := be.count()
	if code := post(strings.NewReader(strings.Repeat("x", 2<<20)), 2<<20); code != 413 {
		t.Errorf("declared 2 MiB over a 1 MiB limit: %d, want 413", code)
	}
	if be.count() != before {
		t.Error("an over-limit declared body reached the backend")
	}
	// A chunked body (length unknown) that grows past the limit.
	if code := post(io.LimitReader(zeros{}, 3<<20), -1); code != 413 {
		t.Errorf("streamed 3 MiB over a 1 MiB limit: %d, want 413", code)
	}
	if code := post(io.LimitReader(zeros{}, 900<<10), -1); code != 200 {
		t.Errorf("900 KiB under the limit: %d", code)
	}
	if in := r.srv.router.Load().Route("web").Pools[0].Instances[0]; !in.Available() {
		t.Error("oversized uploads got the instance ejected")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
