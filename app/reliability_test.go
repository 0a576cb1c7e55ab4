package app

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/internal/streamtest"
)

// streamBackend serves /events (an event every 50 ms until the client goes)
// and /ws (a WebSocket echo).
func streamBackend(t *testing.T) *httptest.Server { return streamtest.Start(t, "") }

// 100 event streams and 100 WebSockets stay open across 10 reloads.
func TestStreamsSurviveReloads(t *testing.T) {
	be := streamBackend(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	cfg := func(w int) string {
		return configText(w, be.URL, be.URL+"/", "server: { idle_timeout: 1m }")
	}
	writeFile(t, path, cfg(10))
	r := startRig(t, path)
	addr := strings.TrimPrefix(r.proxy, "http://")
	const n = 100
	var sseConns, wsConns []net.Conn
	var sseReaders []*bufio.Reader
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream %d: %v %v", i, resp, err)
		}
		sseConns, sseReaders = append(sseConns, c), append(sseReaders, br)
		w, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		wr := bufio.NewReader(w)
		if resp, err := http.ReadResponse(wr, nil); err != nil || resp.StatusCode != 101 {
			t.Fatalf("websocket %d: %v %v", i, resp, err)
		}
		wsConns = append(wsConns, &bufConn{w, wr})
	}
	defer func() {
		for _, c := range append(sseConns, wsConns...) {
			c.Close()
		}
	}()
	for i := 0; i < 10; i++ {
		writeFile(t, path, cfg(20+i*5))
		r.next("applied", 3*time.Second)
	}
	// Every stream still delivers events; every WebSocket still echoes.
	for i, br := range sseReaders {
		sseConns[i].SetReadDeadline(time.Now().Add(3 * time.Second))
		line, err := br.ReadString('\n')
		for err == nil && !strings.HasPrefix(line, "data:") {
			line, err = br.ReadString('\n')
		}
		if err != nil {
			t.Fatalf("event stream %d closed after the reloads: %v", i, err)
		}
	}
	for i, c := range wsConns {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatalf("websocket %d: write: %v", i, err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil || b[0] != byte(i) {
			t.Fatalf("websocket %d closed after the reloads: %v", i, err)
		}
	}
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Hundreds of connections trickling header bytes are closed by the header
// timeout, while normal clients see no error.
func TestSlowloris(t *testing.T) {
	long(t) // seconds of load: outside the fast lane
	be := pathBackend(t)
	path := oneRouteConfig(t, `server: { read_header_timeout: 1s }`, "", be.URL)
	r := startRig(t, path)
	addr := strings.TrimPrefix(r.proxy, "http://")
	const slow = 300
	var closed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < slow; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n"))
			for k := 0; k < 20; k++ { // a header byte every 400 ms, for up to 8 s
				time.Sleep(400 * time.Millisecond)
				if _, err := c.Write([]byte("X")); err != nil {
					closed.Add(1)
					return
				}
				c.SetReadDeadline(time.Now().Add(time.Millisecond))
				if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
					closed.Add(1)
					return
				}
			}
		}()
	}
	stop := make(chan struct{})
	wait := r.load(4, stop)
	time.Sleep(4 * time.Second)
	close(stop)
	ok, bad, first := wait()
	wg.Wait()
	if bad != 0 || ok == 0 {
		t.Errorf("normal clients during the slowloris: %d ok, %d failed (%s)", ok, bad, first)
	}
	if closed.Load() < slow*9/10 {
		t.Errorf("only %d of %d slow connections were closed by the header timeout", closed.Load(), slow)
	}
	t.Logf("%d slow connections, %d closed by canaryd; normal clients: %d ok, 0 failed", slow, closed.Load(), ok)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// Replace every instance of a pool, one at a time, by config edits under
// load: nothing fails.
func TestRollingReplacement(t *testing.T) {
	olds := []*named{newNamed(t, "old-1", 0), newNamed(t, "old-2", 0), newNamed(t, "old-3", 0)}
	news := []*named{newNamed(t, "new-1", 0), newNamed(t, "new-2", 0), newNamed(t, "new-3", 0)}
	path := filepath.Join(t.TempDir(), "config.yaml")
	write := func(insts []*named) {
		var q []string
		for _, n := range insts {
			q = append(q, fmt.Sprintf("%q", n.URL))
		}
		writeFile(t, path, fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: [%s] }]
`, strings.Join(q, ", ")))
	}
	write(olds)
	r := startRig(t, path)
	stop := make(chan struct{})
	wait := r.load(8, stop)
	current := append([]*named(nil), olds...)
	for i := range olds {
		current[i] = news[i]
		write(current)
		r.next("applied", 3*time.Second)
		time.Sleep(200 * time.Millisecond)
		olds[i].Close() // the old instance goes away once drained
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	ok, bad, first := wait()
	if bad != 0 || ok == 0 {
		t.Errorf("rolling replacement: %d ok, %d failed (first: %s)", ok, bad, first)
	}
	for _, n := range news {
		if n.hits.Load() == 0 {
			t.Errorf("%s took no traffic", n.URL)
		}
	}
	t.Logf("rolling replacement of 3 instances: %d requests, 0 failed", ok)
}

// A large allowed upload streams through with bounded memory.
func TestLargeUploadStreams(t *testing.T) {
	var got atomic.Int64
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got.Store(n)
	}))
	defer be.Close()
	path := oneRouteConfig(t, `server: { max_request_body_bytes: 1073741824 }`, "", be.URL)
	r := startRig(t, path)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		var m runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
			}
		}
	}()
	const size = 256 << 20
	resp, err := r.client.Post(r.proxy+"/upload", "application/octet-stream", io.LimitReader(zeros{}, size))
	close(done)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	grew := int64(peak.Load()) - int64(base)
	t.Logf("256 MiB upload: heap grew by at most %d KiB", grew>>10)
	if resp.StatusCode != 200 || got.Load() != size {
		t.Errorf("upload: %d, backend got %d bytes", resp.StatusCode, got.Load())
	}
	if grew > 32<<20 {
		t.Errorf("heap grew by %d MiB streaming a 256 MiB upload; want it bounded", grew>>20)
	}
}

// A backend that reads the request then drops the connection: a GET reaches
// it at most twice (the transport's single retry on a dead keep-alive
// connection), and the client gets 502.
func TestGETRetriedAtMostOnce(t *testing.T) {
	var mu sync.Mutex
	perID := map[string]int{}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		perID[r.Header.Get("X-Request-Id")]++
		mu.Unlock()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	}))
	defer be.Close()
	path := oneRouteConfig(t, "", `    health: { passive: { consecutive_failures: 0 } }`, be.URL)
	r := startRig(t, path)
	for i := 0; i < 20; i++ {
		req, _ := http.NewRequest(http.MethodGet, r.proxy+"/", nil)
		req.Header.Set("X-Request-Id", fmt.Sprintf("get-%d", i))
		resp, err := r.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 502 {
			t.Errorf("GET %d: %d, want 502", i, resp.StatusCode)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id, n := range perID {
		if n > 2 {
			t.Errorf("%s reached the backend %d times", id, n)
		}
	}
	if len(perID) != 20 {
		t.Errorf("%d distinct GETs reached the backend", len(perID))
	}
}

// Every mutation path refuses a missing or wrong token; the admin listener
// binds to loopback by default.
func TestEveryMutationNeedsTheToken(t *testing.T) {
	a := startAdminRig(t)
	for _, m := range []struct{ method, path, body string }{
		{"POST", "/api/v1/reload", ""},
		{"PUT", "/api/v1/routes/api/weights", `{"v1": 50, "v2": 50}`},
		{"POST", "/api/v1/routes/web/promote", ""},
		{"POST", "/api/v1/routes/web/abort", ""},
		{"POST", "/api/v1/routes/web/pause", ""},
		{"POST", "/api/v1/routes/web/resume", ""},
	} {
		for _, tok := range []string{"", "wrong", secret[:len(secret)-1]} {
			ct := ""
			if m.body != "" {
				ct = "application/json"
			}
			if code, _ := a.call(t, m.method, m.path, "", tok, ct, m.body); code != 401 {
				t.Errorf("%s %s with token %q: %d, want 401", m.method, m.path, tok, code)
			}
		}
	}
	if st, _ := a.srv.rollouts.Status("web"); st.Phase != "progressing" {
		t.Errorf("refused calls changed the rollout: %s", st.Phase)
	}
	cfg := defaultConfig(t)
	if !strings.HasPrefix(cfg.Admin.Listen, "127.0.0.1:") {
		t.Errorf("default admin.listen %q is not loopback", cfg.Admin.Listen)
	}
}

func defaultConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Parse("d.yaml", []byte("routes: [{ name: web, pools: [{ name: blue, weight: 100, instances: [\"127.0.0.1:1\"] }] }]"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
