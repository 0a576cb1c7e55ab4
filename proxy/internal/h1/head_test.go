package h1

import (
	"bufio"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

var headSeeds = []struct {
	raw  string
	lean bool // whether the lean parser takes it
}{
	{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello", true},
	{"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", true},
	{"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", true},
	{"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye", true},
	{"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 1\r\n\r\nx", true},
	{"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nx-lower: v\r\n\r\nx", true},
	{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", true},
	{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Spaces:   padded\t \r\nEmpty:\r\n\r\nabc", true},
	{"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx", true},
	// Every other shape goes to http.ReadResponse.
	{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\n\r\nuntil close", false},
	{"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false},
	{"HTTP/1.1 204 No Content\r\n\r\n", false},
	{"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false},
	{"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", false},
	{"HTTP/1.1 200 OK\nContent-Length: 1\n\nx", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n folded\r\n\r\nx", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nBad Name: v\r\n\r\nx", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX: a\x00b\r\n\r\nx", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTrailer: X\r\n\r\nx", false},
	{"HTTP/1.1 2x0 OK\r\nContent-Length: 1\r\n\r\nx", false},
	{"HTTP/1.1 200OK\r\nContent-Length: 1\r\n\r\nx", false},
	{"HTTP/1.1 999 Odd\r\nContent-Length: 1\r\n\r\nx", false},
	{"SSH-2.0-OpenSSH\r\n\r\n", false},
}

// leanAgrees checks the lean parser against http.ReadResponse on raw: when
// it takes the answer, it must read what ReadResponse reads; when it does
// not, it must have consumed nothing.
func leanAgrees(t *testing.T, raw string, size int) (lean bool) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://x/", nil)
	ref, refErr := http.ReadResponse(bufio.NewReaderSize(strings.NewReader(raw), size), req)
	var refBody []byte
	var refBodyErr error
	if refErr == nil {
		refBody, refBodyErr = io.ReadAll(ref.Body)
	}

	br := bufio.NewReaderSize(strings.NewReader(raw), size)
	h, ok, err := parseLeanHead(br, req)
	if err != nil {
		if refErr == nil {
			t.Errorf("%q: lean error %v, ReadResponse read it", raw, err)
		}
		return false
	}
	if !ok {
		if n, _ := io.Copy(io.Discard, br); n != int64(len(raw)) {
			t.Errorf("%q: declined but consumed %d bytes", raw, int64(len(raw))-n)
		}
		return false
	}
	if refErr != nil {
		t.Errorf("%q: lean took an answer ReadResponse refuses (%v)", raw, refErr)
		return true
	}
	got := h.resp
	if got.Status != ref.Status || got.StatusCode != ref.StatusCode || got.Proto != ref.Proto ||
		got.ContentLength != ref.ContentLength || got.Close != ref.Close || !reflect.DeepEqual(got.Header, ref.Header) {
		t.Errorf("%q:\nlean %q %d %s len %d close %v %v\nref  %q %d %s len %d close %v %v", raw,
			got.Status, got.StatusCode, got.Proto, got.ContentLength, got.Close, got.Header,
			ref.Status, ref.StatusCode, ref.Proto, ref.ContentLength, ref.Close, ref.Header)
	}
	body := make([]byte, h.length)
	_, err = io.ReadFull(br, body)
	if (err != nil) != (refBodyErr != nil) || (err == nil && string(body) != string(refBody)) {
		t.Errorf("%q: lean body %q (%v), ReadResponse's %q (%v)", raw, body, err, refBody, refBodyErr)
	}
	return true
}

func TestLeanHeadAgreesWithReadResponse(t *testing.T) {
	for _, s := range headSeeds {
		if got := leanAgrees(t, s.raw, 4096); got != s.lean {
			t.Errorf("%q: lean parser took it = %v, want %v", s.raw, got, s.lean)
		}
	}
	// A head longer than the buffer is declined, not cut.
	long := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", 100) + "\r\nContent-Length: 1\r\n\r\nx"
	if leanAgrees(t, long, 64) {
		t.Error("a head longer than the buffer was taken")
	}
}

// A head that arrives in pieces is waited for, not declined.
func TestLeanHeadWaitsForTheRest(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok"
	req, _ := http.NewRequest("GET", "http://x/", nil)
	br := bufio.NewReader(&trickle{s: raw, n: 3})
	h, ok, err := parseLeanHead(br, req)
	if err != nil || !ok || h.length != 2 || h.resp.Header.Get("X-A") != "1" {
		t.Fatalf("ok %v err %v head %+v", ok, err, h)
	}
}

// trickle hands out s a few bytes per Read, like a slow network.
type trickle struct {
	s string
	n int
}

func (r *trickle) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.s)
	r.s = r.s[n:]
	return n, nil
}

func FuzzLeanHead(f *testing.F) {
	for _, s := range headSeeds {
		f.Add(s.raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		leanAgrees(t, raw, 4096)
	})
}

// isTchar must agree with RFC 9110's definition by exclusion: visible
// ASCII that is not a delimiter.
func TestIsTcharMatchesTheDelimiterSet(t *testing.T) {
	for c := 0; c < 256; c++ {
		want := c > ' ' && c < 0x7f && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
		if got := isTchar(byte(c)); got != want {
			t.Errorf("isTchar(%q) = %v, want %v", rune(c), got, want)
		}
	}
}

// BenchmarkLeanHead parses the head nginx sends for a small static answer.
func BenchmarkLeanHead(b *testing.B) {
	const head = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 23:40:00 GMT\r\n" +
		"Content-Type: text/plain\r\nContent-Length: 128\r\nConnection: keep-alive\r\n\r\n"
	req, _ := http.NewRequest(http.MethodGet, "http://example.com/", nil)
	sr := strings.NewReader(head)
	br := bufio.NewReaderSize(sr, 4096)
	b.ReportAllocs()
	for b.Loop() {
		sr.Reset(head)
		br.Reset(sr)
		if _, ok, err := parseLeanHead(br, req); !ok || err != nil {
			b.Fatalf("not parsed as lean: %v", err)
		}
	}
}
