package app

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// gate is an instance whose /slow requests wait until released, and that
// records the most it ever had at once.
type gate struct {
	*httptest.Server
	release        chan struct{}
	now, max, seen atomic.Int64
}

func newGate(t *testing.T) *gate {
	g := &gate{release: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.seen.Add(1)
		n := g.now.Add(1)
		defer g.now.Add(-1)
		for m := g.max.Load(); n > m && !g.max.CompareAndSwap(m, n); m = g.max.Load() {
		}
		if r.URL.Path == "/slow" {
			select {
			case <-g.release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(func() {
		select {
		case <-g.release:
		default:
			close(g.release)
		}
		g.Close()
	})
	return g
}

// rawH2 is a hostile HTTP/2 client: frames written by hand.
type rawH2 struct {
	mu  sync.Mutex // writes come from the test and the reader (SETTINGS ACK)
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialH2(t *testing.T, addr string) *rawH2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &rawH2{c: c, fr: http2.NewFramer(c, c)}
	h.enc = hpack.NewEncoder(&h.buf)
	io.WriteString(c, http2.ClientPreface)
	h.fr.WriteSettings()
	return h
}

func (h *rawH2) headers(id uint32, path string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
		h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.buf.Bytes(), EndStream: true, EndHeaders: true})
}

func (h *rawH2) rst(id uint32) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
}

// frames reads until the connection goes quiet for idle (or closes),
// counting stream resets and noting a GOAWAY.
func (h *rawH2) frames(idle time.Duration) (resets int, goaway bool, err error) {
	for {
		h.c.SetReadDeadline(time.Now().Add(idle))
		f, err := h.fr.ReadFrame()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return resets, goaway, nil
		}
		if err != nil {
			return resets, goaway, err
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			resets++
		case *http2.GoAwayFrame:
			goaway = true
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.mu.Lock()
				h.fr.WriteSettingsAck()
				h.mu.Unlock()
			}
		}
	}
}

func h2Rig(t *testing.T, be string) *rig {
	return startFileRig(t, t.TempDir(), fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
server: { h2c: true, http2: { max_concurrent_streams: 10 } }
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["%s"] }]
`, be))
}

// A client that opens 200 streams on one connection, against a limit of
// 10, has the streams past 10 refused: the instance never sees more than
// 10 of its requests at once.
func TestHTTP2StreamFloodIsBounded(t *testing.T) {
	g := newGate(t)
	r := h2Rig(t, g.URL)
	h := dialH2(t, r.srv.ProxyAddr().String())
	for i := uint32(0); i < 200; i++ {
		if err := h.headers(2*i+1, "/slow"); err != nil {
			t.Fatal(err)
		}
	}
	resets, _, err := h.frames(time.Second)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Logf("read: %v", err)
	}
	if resets < 190 {
		t.Errorf("%d of 200 streams reset, want at least 190 (the limit is 10)", resets)
	}
	if m := g.max.Load(); m > 10 {
		t.Errorf("the instance saw %d requests at once, over the limit of 10", m)
	}
	close(g.release)
	t.Logf("200 streams opened: %d reset, at most %d at the instance at once", resets, g.max.Load())
}

// Rapid reset (CVE-2023-44487): a client that opens and at once cancels
// 5,000 streams runs at most max_concurrent_streams handlers at a time,
// leaves no goroutines behind, and the proxy keeps serving others.
func TestHTTP2RapidResetIsBounded(t *testing.T) {
	g := newGate(t)
	r := h2Rig(t, g.URL)
	base := runtime.NumGoroutine()
	h := dialH2(t, r.srv.ProxyAddr().String())
	peak := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.frames(2 * time.Second) // answer SETTINGS, drain resets
	}()
	for i := uint32(0); i < 5000; i++ {
		id := 2*i + 1
		if h.headers(id, "/slow") != nil || h.rst(id) != nil {
			break // the server closed the connection: also a bound
		}
		if i%500 == 0 {
			peak = max(peak, runtime.NumGoroutine()-base)
		}
	}
	<-done
	if m := g.max.Load(); m > 10 {
		t.Errorf("the instance saw %d requests at once, over max_concurrent_streams (10)", m)
	}
	if peak > 200 {
		t.Errorf("%d goroutines above the baseline during the flood; want a bound near the stream limit", peak)
	}
	h.c.Close()
	for end := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > base+20; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d goroutines after the flood, %d before", runtime.NumGoroutine(), base)
		}
	}
	resp, body := get(t, r.client, r.proxy+"/")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("after the flood: %d %q", resp.StatusCode, body)
	}
	t.Logf("5,000 rapid resets: %d requests reached the instance, at most %d at once, peak %d goroutines above the baseline", g.seen.Load(), g.max.Load(), peak)
}
