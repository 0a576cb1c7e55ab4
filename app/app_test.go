package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"canaryd/config"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// long marks a test that takes seconds: go test -short (the fast lane)
// skips it; scripts/test.sh runs it.
func long(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("long test; runs without -short")
	}
}

// During a drain /readyz says 503 while in-flight requests still finish
// with 200; Serve then returns nil and leaves no goroutine behind.
func TestDrainFlipsReadinessAndFinishesRequests(t *testing.T) {
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "ok")
	}))
	defer be.Close()
	cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["%s"] }]
`, be.URL)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	status := func(url string) int {
		resp, err := client.Get(url)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	proxyURL, readyURL := "http://"+srv.ProxyAddr().String(), "http://"+srv.AdminAddr().String()+"/readyz"
	// Serve turns ready once everything runs (a moment after it starts).
	for end := time.Now().Add(5 * time.Second); status(readyURL) != 200; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("readyz before drain: %d", status(readyURL))
		}
	}
	slow := make(chan int, 1)
	go func() { slow <- status(proxyURL + "/slow") }()
	for end := time.Now().Add(5 * time.Second); srv.router.Load().Route("web").Pools[0].Instances[0].InFlight() == 0; {
		if time.Now().After(end) {
			t.Fatal("slow request never reached the instance")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	for end := time.Now().Add(5 * time.Second); status(readyURL) != http.StatusServiceUnavailable; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("readyz did not turn 503 during the drain")
		}
	}
	close(release)
	if s := <-slow; s != 200 {
		t.Errorf("in-flight request during drain: %d", s)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestListenConflictIsClear(t *testing.T) {
	cfg, _ := config.Parse("t.yaml", []byte(`
listen: "127.0.0.1:0"
admin: { listen: "off" }
routes: [{ name: web, pools: [{ name: blue, weight: 100, instances: ["127.0.0.1:1"] }] }]
`))
	a, _ := New(cfg, Options{})
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	defer a.proxyLn.Close()
	cfg.Listen = a.ProxyAddr().String()
	b, _ := New(cfg, Options{})
	if err := b.Listen(); err == nil {
		t.Fatal("second listener on the same port succeeded")
	} else if want := "change listen in the config"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}
}

// serveFor runs srv until the test ends or stop is called; stop waits for
// Serve to return and fails the test on its error.
func serveFor(t *testing.T, srv *Server) (stop func()) {
	t.Helper()
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
