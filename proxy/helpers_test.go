package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"canaryd/balancer"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// http.Transport, the conformance suite's reference, logs each answer
	// an instance sends where none was asked for through the standard
	// logger; the suite provokes hundreds. Everything else still shows.
	log.SetOutput(dropLines{"Unsolicited response received on idle HTTP channel", os.Stderr})
	goleak.VerifyTestMain(m)
}

// dropLines writes to w every log line that does not contain drop.
type dropLines struct {
	drop string
	w    io.Writer
}

func (d dropLines) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(d.drop)) {
		return len(p), nil
	}
	return d.w.Write(p)
}

// backend is a real loopback server that answers with its name.
func backend(t testing.TB, name string) *httptest.Server {
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		io.WriteString(w, name)
	}))
}

func serve(t testing.TB, h http.Handler) *httptest.Server {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// holdUntilGone is an instance's handler that never answers: it returns
// once the request's context ends (canaryd closed the connection), then
// closing gone unless it is nil, or after 10s.
func holdUntilGone(r *http.Request, gone chan<- struct{}) {
	select {
	case <-r.Context().Done():
		if gone != nil {
			close(gone)
		}
	case <-time.After(10 * time.Second):
	}
}

// deadAddr is a loopback port with nothing listening (connection refused).
func deadAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

type pool struct {
	name   string
	weight int // basis points
	urls   []string
}

func routeSpec(t testing.TB, pools ...pool) balancer.RouteSpec {
	s := balancer.RouteSpec{Name: "web", PathPrefix: "/", PreserveHost: true}
	for _, p := range pools {
		ps := balancer.PoolSpec{Name: p.name, Weight: p.weight}
		for _, raw := range p.urls {
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			ps.Instances = append(ps.Instances, u)
		}
		s.Pools = append(s.Pools, ps)
	}
	return s
}

// rig is a proxy on a real loopback listener in front of a router.
type rig struct {
	router *balancer.Router
	srv    *httptest.Server
	client *http.Client
	rec    *recorder
}

func newRig(t testing.TB, opts Options, specs ...balancer.RouteSpec) *rig {
	r := &rig{router: balancer.NewRouter(), rec: &recorder{}}
	if _, err := r.router.Apply(specs); err != nil {
		t.Fatal(err)
	}
	tr, _ := opts.Transport.(*Transport)
	if tr == nil {
		tr = NewTransport(TransportOptions{})
		opts.Transport = tr
	}
	if opts.Observer == nil {
		opts.Observer = r.rec
	}
	r.srv = serve(t, New(r.router, opts))
	ct := &http.Transport{MaxIdleConnsPerHost: 64}
	r.client = &http.Client{Transport: ct, Timeout: 10 * time.Second}
	t.Cleanup(func() {
		ct.CloseIdleConnections()
		tr.CloseIdleConnections()
	})
	return r
}

func (r *rig) get(t testing.TB, path string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	return r.send(t, http.MethodGet, path, http.NoBody, hdr)
}

// send sends one request through the proxy and reads its whole answer.
func (r *rig) send(t testing.TB, method, path string, body io.Reader, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, r.srv.URL+path, body)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// keeper keeps copies of what it is given, for a test to read.
type keeper[T any] struct {
	mu  sync.Mutex
	out []T
}

func (k *keeper[T]) keep(v *T) {
	k.mu.Lock()
	k.out = append(k.out, *v)
	k.mu.Unlock()
}

func (k *keeper[T]) all() []T {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]T(nil), k.out...)
}

// recorder is an Observer that keeps outcomes.
type recorder struct{ keeper[Outcome] }

func (r *recorder) Observe(o *Outcome) { r.keep(o) }

// waitFor polls cond for up to 5 s: outcomes are recorded after the client
// already has its answer.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// wsEcho is a minimal RFC 6455 server: handshake, then echo each short
// masked frame back unmasked.
func wsEcho(t testing.TB) *httptest.Server {
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want websocket", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(r.Header.Get("Sec-WebSocket-Key")))
		brw.Flush()
		for {
			op, payload, err := readFrame(brw.Reader)
			if err != nil || op == 0x8 {
				return
			}
			conn.Write(append([]byte{0x80 | op, byte(len(payload))}, payload...))
		}
	}))
}

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// readFrame reads one frame with a payload under 126 bytes.
func readFrame(r *bufio.Reader) (op byte, payload []byte, err error) {
	var hdr [2]byte
	if _, err = io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(hdr[1] & 0x7f)
	var mask [4]byte
	masked := hdr[1]&0x80 != 0
	if masked {
		if _, err = io.ReadFull(r, mask[:]); err != nil {
			return 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= mask[i%4]
		}
	}
	return hdr[0] & 0x0f, payload, nil
}

func maskedFrame(op byte, payload []byte) []byte {
	mask := [4]byte{1, 2, 3, 4}
	f := []byte{0x80 | op, 0x80 | byte(len(payload)), mask[0], mask[1], mask[2], mask[3]}
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	return f
}
