package app

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/balancer"
	"canaryd/health"
	"canaryd/metrics"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// restartable is a backend on a fixed loopback port that can be killed
// (listener and connections closed for real) and started again, or hung
// (it accepts and reads requests but never answers).
type restartable struct {
	t       *testing.T
	name    string
	addr    string
	hits    atomic.Int64
	healthz atomic.Int32 // status of /healthz; 0 means 200
	hung    atomic.Bool
	release chan struct{}

	mu  sync.Mutex
	srv *http.Server
}

func newRestartable(t *testing.T, name string) *restartable {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &restartable{t: t, name: name, addr: l.Addr().String(), release: make(chan struct{})}
	b.serve(l)
	t.Cleanup(b.kill)
	return b
}

func (b *restartable) url() string { return "http://" + b.addr }

func (b *restartable) serve(l net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if s := b.healthz.Load(); s != 0 {
				w.WriteHeader(int(s))
			}
			return
		}
		if b.hung.Load() {
			select {
			case <-b.release:
			case <-time.After(10 * time.Second):
			}
			return
		}
		b.hits.Add(1)
		w.Header().Set("X-Backend", b.name)
		io.WriteString(w, b.name)
	})}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go srv.Serve(l)
}

func (b *restartable) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		b.srv.Close()
		b.srv = nil
	}
}

func (b *restartable) restart() {
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger a moment after close
		if l, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatalf("restart %s on %s: %v", b.name, b.addr, err)
	}
	b.serve(l)
}

func (r *rig) instance(pool, addr string) *balancer.Instance {
	for _, rt := range r.srv.router.Load().Routes() {
		for _, p := range rt.Pools {
			for _, in := range p.Instances {
				if p.Name == pool && in.URL.Host == addr {
					return in
				}
			}
		}
	}
	return nil
}

func (r *rig) waitAvailable(pool, addr string, up bool, within time.Duration) time.Duration {
	r.t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if in := r.instance(pool, addr); in != nil && in.Available() == up {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	r.t.Fatalf("%s %s: available=%v not reached within %v", pool, addr, up, within)
	return 0
}

func healthConfigYAML(health, pools string, extra ...string) string {
	return fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
%s
routes:
  - name: web
    health: %s
    pools:
%s`, strings.Join(extra, "\n"), health, pools)
}

// Kill one of two instances under steady load: almost nothing fails, it is
// taken out, the other carries on; restarted, it comes back after `rise`
// probes and ramps up through slow start.
func TestKillAndRestartInstanceUnderLoad(t *testing.T) {
	long(t) // seconds of load: outside the fast lane
	a, b := newRestartable(t, "a"), newRestartable(t, "b")
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, healthConfigYAML(
		`{ active: { path: /healthz, interval: 200ms, unhealthy_interval: 100ms, timeout: 90ms, rise: 2, fall: 3 }, slow_start: 2s }`,
		fmt.Sprintf("      - { name: blue, weight: 100, instances: [%q, %q] }\n", a.addr, b.addr)))
	r := startRig(t, path)
	stop := make(chan struct{})
	wait := r.load(8, stop)
	time.Sleep(300 * time.Millisecond)

	a.kill()
	killToOut := r.waitAvailable("blue", a.addr, false, 5*time.Second)
	bBefore := b.hits.Load()
	time.Sleep(300 * time.Millisecond)
	if b.hits.Load() == bBefore {
		t.Error("the surviving instance took no traffic after the kill")
	}

	time.Sleep(400 * time.Millisecond) // let the probes see it dead, as a real restart takes a while
	a.restart()
	restartToBack := r.waitAvailable("blue", a.addr, true, 5*time.Second)
	share := func(d time.Duration) float64 {
		a0, b0 := a.hits.Load(), b.hits.Load()
		time.Sleep(d)
		da, db := a.hits.Load()-a0, b.hits.Load()-b0
		return float64(da) / float64(da+db)
	}
	early := share(400 * time.Millisecond)
	time.Sleep(1700 * time.Millisecond)
	late := share(500 * time.Millisecond)
	close(stop)
	ok, bad, first := wait()
	t.Logf("kill → out of rotation %v; restart → back %v; share in slow start %.2f, after %.2f; %d ok, %d failed",
		killToOut, restartToBack, early, late, ok, bad)
	if early >= late || late < 0.35 {
		t.Errorf("slow start: share %.2f during the ramp, %.2f after; want a smaller share first and ~0.5 after", early, late)
	}
	if float64(bad) > 0.01*float64(ok) {
		t.Errorf("%d of %d requests failed while an instance died (first: %s)", bad, ok+bad, first)
	}
}

// A hung instance: requests to it get 504 after the upstream timeout, it is
// ejected after `consecutive_failures`, and once it recovers the goroutine
// count returns to where it was.
func TestHungInstance(t *testing.T) {
	h, b := newRestartable(t, "hung"), newRestartable(t, "b")
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, healthConfigYAML(
		`{ passive: { consecutive_failures: 3, eject_for: 1s } }`,
		fmt.Sprintf("      - { name: blue, weight: 100, instances: [%q, %q] }\n", h.addr, b.addr),
		"upstream: { response_header_timeout: 300ms }"))
	r := startRig(t, path)
	get := func() (int, time.Duration) {
		start := time.Now()
		resp, err := r.client.Get(r.proxy + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}
	for i := 0; i < 10; i++ {
		get()
	}
	time.Sleep(100 * time.Millisecond)
	baseline := runtime.NumGoroutine()

	h.hung.Store(true)
	codes := map[int]int{}
	for i := 0; i < 20; i++ {
		code, d := get()
		codes[code]++
		if code == http.StatusGatewayTimeout && d > 2*time.Second {
			t.Errorf("504 took %v with a 300ms timeout", d)
		}
	}
	if codes[504] != 3 || codes[200] != 17 {
		t.Errorf("answers while hung: %v; want 3 × 504 (then ejected) and 17 × 200", codes)
	}
	if in := r.instance("blue", h.addr); in.Available() {
		t.Error("hung instance not ejected")
	}
	h.hung.Store(false)
	close(h.release)
	r.waitAvailable("blue", h.addr, true, 5*time.Second)
	for i := 0; i < 10; i++ {
		if code, _ := get(); code != 200 {
			t.Errorf("after recovery: %d", code)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline+2 {
		t.Errorf("goroutines: %d after recovery, %d before the hang", n, baseline)
	}
}

// The whole canary pool dies: its share moves to stable and clients see no
// errors once it is ejected. Then stable dies too: 503, not 502.
func TestWholePoolDown(t *testing.T) {
	blue, green := newRestartable(t, "blue"), newRestartable(t, "green")
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, healthConfigYAML(`{ passive: { consecutive_failures: 3, eject_for: 30s } }`,
		fmt.Sprintf("      - { name: blue, weight: 50, instances: [%q] }\n      - { name: green, weight: 50, instances: [%q] }\n", blue.addr, green.addr)))
	r := startRig(t, path)
	stop := make(chan struct{})
	wait := r.load(4, stop)
	time.Sleep(200 * time.Millisecond)
	green.kill()
	r.waitAvailable("green", green.addr, false, 5*time.Second)
	close(stop)
	wait()
	stop2 := make(chan struct{})
	wait2 := r.load(4, stop2)
	time.Sleep(500 * time.Millisecond)
	close(stop2)
	ok, bad, first := wait2()
	if bad != 0 || ok == 0 {
		t.Errorf("after the canary pool's ejection: %d ok, %d failed (first: %s)", ok, bad, first)
	}
	if p := r.srv.router.Load().Route("web").Pools[0]; p.Effective != balancer.Slots {
		t.Errorf("blue's effective share %d bp, want all of it", p.Effective)
	}

	blue.kill()
	for i := 0; i < 10; i++ { // three gateway failures eject it
		resp, err := r.client.Get(r.proxy + "/")
		if err == nil {
			resp.Body.Close()
		}
	}
	r.waitAvailable("blue", blue.addr, false, 5*time.Second)
	resp, err := r.client.Get(r.proxy + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("every pool down: %d, want 503", resp.StatusCode)
	}
}

// Three of four instances fail their probes: below the 50% panic threshold
// the pool spreads traffic over all four; with panic off, only over the one.
func TestPanicMode(t *testing.T) {
	var bs []*restartable
	var addrs []string
	for i := 0; i < 4; i++ {
		b := newRestartable(t, fmt.Sprint("i", i))
		if i > 0 {
			b.healthz.Store(http.StatusServiceUnavailable)
		}
		bs = append(bs, b)
		addrs = append(addrs, fmt.Sprintf("%q", b.addr))
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	cfg := func(panic int) string {
		return healthConfigYAML(
			fmt.Sprintf(`{ active: { path: /healthz, interval: 100ms, timeout: 80ms, fall: 2 }, panic_threshold: %d }`, panic),
			fmt.Sprintf("      - { name: blue, weight: 100, instances: [%s] }\n", strings.Join(addrs, ", ")))
	}
	writeFile(t, path, cfg(50))
	r := startRig(t, path)
	for _, b := range bs[1:] {
		r.waitAvailable("blue", b.addr, false, 5*time.Second)
	}
	// An instance's flag flips just before the table that follows from it
	// is published: wait for the table.
	for end := time.Now().Add(5 * time.Second); !r.srv.router.Load().Route("web").Pools[0].Panic; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("pool with 1 of 4 available is not in panic mode")
		}
	}
	reached := func() int {
		before := make([]int64, len(bs))
		for i, b := range bs {
			before[i] = b.hits.Load()
		}
		for i := 0; i < 200; i++ {
			resp, err := r.client.Get(r.proxy + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		n := 0
		for i, b := range bs {
			if b.hits.Load() > before[i] {
				n++
			}
		}
		return n
	}
	if n := reached(); n != 4 {
		t.Errorf("panic mode: traffic reached %d of 4 instances", n)
	}
	writeFile(t, path, cfg(0))
	r.next("applied", 3*time.Second)
	if n := reached(); n != 1 {
		t.Errorf("panic off: traffic reached %d instances, want only the healthy one", n)
	}
}

// An ejection's length is logged with its unit.
func TestEjectionLogHasUnit(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	reg := metrics.NewRegistry()
	e := healthEvents{log: zap.New(core), metrics: metrics.NewHealth(reg), router: balancer.NewRouter(), weights: func(string) {}}
	e.Transition(health.Transition{Target: health.Target{Route: "web", Pool: "blue", Addr: "127.0.0.1:1"}, Source: health.Passive, EjectedFor: 30 * time.Second})
	entries := logs.FilterMessage("instance ejected").All()
	if len(entries) != 1 || entries[0].ContextMap()["ejected_for"] != "30s" {
		t.Fatalf("ejection lines %v; want ejected_for \"30s\"", entries)
	}
}
