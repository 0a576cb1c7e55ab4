package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// named is a loopback backend that answers with its name and counts what
// reaches it.
type named struct {
	*httptest.Server
	hits  atomic.Int64
	conns atomic.Int64 // open client connections
}

func newNamed(t *testing.T, name string, slow time.Duration) *named {
	n := &named{}
	n.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.hits.Add(1)
		if r.URL.Path == "/slow" {
			time.Sleep(slow)
		}
		w.Header().Set("X-Backend", name)
		io.WriteString(w, name)
	}))
	n.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			n.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			n.conns.Add(-1)
		}
	}
	n.Start()
	t.Cleanup(n.Close)
	return n
}

func (n *named) hostport() string { return strings.TrimPrefix(n.URL, "http://") }

// configText is a one-route config; green's weight is in percent.
func configText(green int, blue, greenURL string, extra ...string) string {
	return fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
%s
routes:
  - name: web
    force: { header: X-Canary-Pool }
    pools:
      - { name: blue, weight: %d, instances: ["%s"] }
      - { name: green, weight: %d, instances: ["%s"] }
`, strings.Join(extra, "\n"), 100-green, blue, green, greenURL)
}

// oneRouteConfig writes a config whose route "web" has one pool "blue" of
// one instance, with extra top-level and route-level lines, and returns its
// path.
func oneRouteConfig(t *testing.T, top, route, instance string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
%s
routes:
  - name: web
%s
    pools: [{ name: blue, weight: 100, instances: [%q] }]
`, top, route, instance))
	return path
}

// rig is a served canaryd that reloads path.
type rig struct {
	t       *testing.T
	srv     *Server
	reg     *prometheus.Registry
	path    string
	results chan ReloadResult
	client  *http.Client
	proxy   string
	admin   string
}

func startRig(t *testing.T, path string) *rig {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(path, data)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, path: path, reg: metrics.NewRegistry(), results: make(chan ReloadResult, 1000)}
	r.srv, err = New(cfg, Options{
		ConfigPath: path, ConfigData: data, Registry: r.reg,
		OnReload: func(res ReloadResult) { r.results <- res },
	})
	if err != nil {
		t.Fatal(err)
	}
	serveFor(t, r.srv)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	r.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	r.proxy = "http://" + r.srv.ProxyAddr().String()
	r.admin = "http://" + r.srv.AdminAddr().String()
	t.Cleanup(tr.CloseIdleConnections)
	return r
}

// next waits for the next reload result with the given outcome, skipping
// others; it fails after within.
func (r *rig) next(result metrics.ReloadOutcome, within time.Duration) ReloadResult {
	r.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case res := <-r.results:
			if res.Result == result {
				return res
			}
		case <-deadline:
			r.t.Fatalf("no %q reload within %v", result, within)
			return ReloadResult{}
		}
	}
}

// quiet asserts that no reload with the given outcome happens for d.
func (r *rig) quiet(result metrics.ReloadOutcome, d time.Duration) {
	r.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case res := <-r.results:
			if res.Result == result {
				r.t.Fatalf("unexpected %s reload (%s)", result, res.Source)
			}
		case <-deadline:
			return
		}
	}
}

func (r *rig) greenWeight() int {
	return r.srv.router.Load().Route("web").Pools[1].Weight / 100
}

func (r *rig) gauge(name string) float64 {
	mfs, err := r.reg.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	r.t.Fatalf("metric %s not found", name)
	return 0
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Every way a file gets changed is applied exactly once and within a
// second; touch and chmod apply nothing; the watcher survives each.
func TestReloadChangeMatrix(t *testing.T) {
	long(t)
	blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, configText(10, blue.URL, green.URL))
	r := startRig(t, path)

	var latencies []time.Duration
	weight := 10
	nextContent := func() (string, int) {
		weight = weight%90 + 10 // 20, 30, ... 90, 10, ...
		return configText(weight, blue.URL, green.URL), weight
	}
	// write returns the moment the new content was saved.
	change := func(name string, write func(content string) time.Time) {
		for round := 0; round < 5; round++ {
			content, w := nextContent()
			start := write(content)
			res := r.next(metrics.ReloadApplied, 3*time.Second)
			lat := res.At.Sub(start)
			latencies = append(latencies, lat)
			if lat > time.Second {
				t.Errorf("%s round %d: applied after %v, want within 1s", name, round, lat)
			}
			if res.Hash != hashOf([]byte(content)) || r.greenWeight() != w {
				t.Errorf("%s round %d: applied hash %s, green weight %d; want %d", name, round, res.Hash, r.greenWeight(), w)
			}
			r.quiet(metrics.ReloadApplied, 300*time.Millisecond) // exactly once
		}
	}
	staging := t.TempDir()
	inPlace := func(c string) time.Time {
		now := time.Now()
		writeFile(t, path, c)
		return now
	}
	change("in-place write", inPlace)
	change("temp file + rename", func(c string) time.Time {
		tmp := filepath.Join(dir, ".config.yaml.swp")
		writeFile(t, tmp, c)
		now := time.Now()
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		return now
	})
	change("mv over from another directory", func(c string) time.Time {
		src := filepath.Join(staging, "new.yaml")
		writeFile(t, src, c)
		now := time.Now()
		if err := os.Rename(src, path); err != nil {
			t.Fatal(err)
		}
		return now
	})
	for round := 0; round < 5; round++ {
		t.Run(fmt.Sprintf("touch and chmod %d", round), func(t *testing.T) {
			now := time.Now()
			os.Chtimes(path, now, now)
			os.Chmod(path, 0o600)
			os.Chmod(path, 0o644)
			r.quiet(metrics.ReloadApplied, 400*time.Millisecond)
		})
	}
	change("delete, recreate after 1s", func(c string) time.Time {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		return inPlace(c)
	})
	change("in-place write after all of it", inPlace)
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	t.Logf("save → applied over %d changes: median %v, max %v", len(latencies), latencies[len(latencies)/2], latencies[len(latencies)-1])
}

// A Kubernetes ConfigMap volume: config.yaml → ..data/config.yaml, and the
// kubelet swaps ..data to a new timestamped directory by renaming a
// temporary symlink over it.
func TestReloadConfigMapSymlinkSwap(t *testing.T) {
	blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
	dir := t.TempDir()
	version := 0
	publish := func(content string) {
		version++
		ts := fmt.Sprintf("..2026_11_25_10_00_%02d.%d", version, version)
		if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, ts, "config.yaml"), content)
		old, _ := os.Readlink(filepath.Join(dir, "..data"))
		if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if old != "" {
			os.RemoveAll(filepath.Join(dir, old))
		}
	}
	publish(configText(10, blue.URL, green.URL))
	path := filepath.Join(dir, "config.yaml")
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), path); err != nil {
		t.Fatal(err)
	}
	r := startRig(t, path)
	var latencies []time.Duration
	for round, w := range []int{20, 30, 40, 50, 60} {
		content := configText(w, blue.URL, green.URL)
		start := time.Now()
		publish(content)
		res := r.next(metrics.ReloadApplied, 3*time.Second)
		latencies = append(latencies, res.At.Sub(start))
		if res.At.Sub(start) > time.Second || r.greenWeight() != w {
			t.Errorf("round %d: applied after %v with green %d, want %d within 1s", round, res.At.Sub(start), r.greenWeight(), w)
		}
		r.quiet(metrics.ReloadApplied, 300*time.Millisecond)
	}
	// A touch through the link applies nothing; a later swap still works.
	now := time.Now()
	os.Chtimes(path, now, now)
	r.quiet(metrics.ReloadApplied, 400*time.Millisecond)
	publish(configText(70, blue.URL, green.URL))
	r.next(metrics.ReloadApplied, 3*time.Second)
	if r.greenWeight() != 70 {
		t.Errorf("after touch, swap applied green %d", r.greenWeight())
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	t.Logf("ConfigMap swap → applied: median %v, max %v", latencies[2], latencies[4])
}

// 200 writes in one second are applied a handful of times at most, and
// the last write is what ends up applied.
func TestReloadStorm(t *testing.T) {
	blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, configText(10, blue.URL, green.URL))
	r := startRig(t, path)
	var last string
	for i := 0; i < 200; i++ {
		last = configText(i%9*10+10, blue.URL, green.URL, fmt.Sprintf("# write %d", i))
		writeFile(t, path, last)
		time.Sleep(5 * time.Millisecond)
	}
	applied := []ReloadResult{r.next(metrics.ReloadApplied, 3*time.Second)}
	for end := time.After(time.Second); ; {
		select {
		case res := <-r.results:
			if res.Result == metrics.ReloadApplied {
				applied = append(applied, res)
			}
			continue
		case <-end:
		}
		break
	}
	if len(applied) > 5 {
		t.Errorf("200 writes caused %d applies, want a handful", len(applied))
	}
	if got := applied[len(applied)-1].Hash; got != hashOf([]byte(last)) {
		t.Errorf("final applied hash %s, want the last write's %s", got, hashOf([]byte(last)))
	}
	t.Logf("200 writes in ~1s → %d applies", len(applied))
}

// load sends requests from n clients until stop is closed and counts what
// was not a 2xx.
func (r *rig) load(n int, stop <-chan struct{}) (wait func() (ok, bad int64, firstBad string)) {
	var okN, badN atomic.Int64
	var first atomic.Pointer[string]
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := r.client.Get(r.proxy + "/")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode/100 != 2 {
					badN.Add(1)
					msg := fmt.Sprint(err)
					if err == nil {
						msg = resp.Status
					}
					first.CompareAndSwap(nil, &msg)
					continue
				}
				okN.Add(1)
			}
		}()
	}
	return func() (int64, int64, string) {
		wg.Wait()
		f := ""
		if p := first.Load(); p != nil {
			f = *p
		}
		return okN.Load(), badN.Load(), f
	}
}

// Alternating valid and invalid files under load: no request fails, the
// reload gauge goes to 0 and back, every valid file is applied.
func TestBadConfigUnderLoad(t *testing.T) {
	blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, configText(10, blue.URL, green.URL))
	r := startRig(t, path)
	stop := make(chan struct{})
	wait := r.load(8, stop)
	for i := 0; i < 8; i++ {
		bad := strings.Replace(configText(20, blue.URL, green.URL), "weight: 20", "weight: 15", 1) // sums to 95
		writeFile(t, path, bad)
		res := r.next(metrics.ReloadFailed, 3*time.Second)
		// An in-place write truncates the file first: a read that lands
		// in between sees it empty, and is refused as well (rightly). The
		// next event brings the whole file.
		if strings.Contains(res.Err.Error(), "file is empty") {
			res = r.next(metrics.ReloadFailed, 3*time.Second)
		}
		if !strings.Contains(res.Err.Error(), "sum to 95%") {
			t.Errorf("failed reload says %q", res.Err)
		}
		if g := r.gauge("canaryd_config_last_reload_successful"); g != 0 {
			t.Errorf("after a bad file the gauge is %v", g)
		}
		w := 20 + 10*(i%2)
		writeFile(t, path, configText(w, blue.URL, green.URL))
		r.next(metrics.ReloadApplied, 3*time.Second)
		if g := r.gauge("canaryd_config_last_reload_successful"); g != 1 || r.greenWeight() != w {
			t.Errorf("after a good file: gauge %v, green %d (want 1, %d)", g, r.greenWeight(), w)
		}
	}
	close(stop)
	ok, bad, first := wait()
	if bad != 0 || ok == 0 {
		t.Errorf("%d ok, %d failed requests during bad reloads (first: %s)", ok, bad, first)
	}
}

// 50 weight flips 10 ↔ 90 while 32 clients send requests: nothing fails,
// and afterwards the split is the last flip's.
func TestWeightFlipsUnderLoad(t *testing.T) {
	long(t)
	blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, configText(10, blue.URL, green.URL))
	r := startRig(t, path)
	stop := make(chan struct{})
	wait := r.load(32, stop)
	w := 10
	for i := 0; i < 50; i++ {
		w = 100 - w
		writeFile(t, path, configText(w, blue.URL, green.URL))
		r.next(metrics.ReloadApplied, 3*time.Second)
	}
	close(stop)
	ok, bad, first := wait()
	if bad != 0 || ok < 100 {
		t.Errorf("%d ok, %d failed requests across 50 flips (first: %s)", ok, bad, first)
	}
	counts := map[string]int{}
	for i := 0; i < 1000; i++ {
		resp, err := r.client.Get(r.proxy + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		counts[resp.Header.Get("X-Backend")]++
	}
	if counts["green"] != w*10 || counts["blue"] != (100-w)*10 {
		t.Errorf("after the last flip (green %d%%): %v over 1000 requests", w, counts)
	}
	t.Logf("%d requests across 50 flips, 0 failed", ok)
}

// Removing an instance with slow requests in flight: they all finish with
// 200, nothing new reaches it, and its connections are closed afterwards.
func TestDrainRemovedInstance(t *testing.T) {
	old := newNamed(t, "old", 800*time.Millisecond)
	repl, green := newNamed(t, "replacement", 0), newNamed(t, "green", 0)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, configText(50, old.URL, green.URL))
	r := startRig(t, path)

	const slow = 5
	results := make(chan string, slow)
	for i := 0; i < slow; i++ {
		go func() {
			req, _ := http.NewRequest(http.MethodGet, r.proxy+"/slow", nil)
			req.Header.Set("X-Canary-Pool", "blue")
			resp, err := r.client.Do(req)
			if err != nil {
				results <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
	}
	for end := time.Now().Add(5 * time.Second); old.hits.Load() < slow; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("only %d slow requests reached the old instance", old.hits.Load())
		}
	}
	writeFile(t, path, configText(50, repl.URL, green.URL))
	r.next(metrics.ReloadApplied, 3*time.Second)
	hitsAtSwap := old.hits.Load()
	for i := 0; i < 100; i++ {
		req, _ := http.NewRequest(http.MethodGet, r.proxy+"/", nil)
		if i%2 == 0 {
			req.Header.Set("X-Canary-Pool", "blue")
		}
		resp, err := r.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Backend") == "old" {
			t.Fatalf("request after the swap: %d from %s", resp.StatusCode, resp.Header.Get("X-Backend"))
		}
	}
	for i := 0; i < slow; i++ {
		if res := <-results; res != "200 old" {
			t.Errorf("in-flight request on the removed instance ended %q", res)
		}
	}
	if got := old.hits.Load(); got != hitsAtSwap {
		t.Errorf("removed instance got %d requests after the swap", got-hitsAtSwap)
	}
	for end := time.Now().Add(5 * time.Second); old.conns.Load() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("removed instance still has %d open connections from canaryd", old.conns.Load())
		}
	}
	if n := r.srv.transport.OpenConns(repl.hostport()); n == 0 {
		t.Error("the replacement's connections were closed too")
	}
}

func TestReloadNeedingRestartIsRejectedWhole(t *testing.T) {
	blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, configText(10, blue.URL, green.URL))
	r := startRig(t, path)
	writeFile(t, path, configText(50, blue.URL, green.URL, `server: { idle_timeout: 5s }`))
	// An in-place write can be read half done (an empty file, refused on
	// its own); the refusal to look at is the whole file's.
	res := r.next(metrics.ReloadFailed, 3*time.Second)
	for i := 0; i < 3 && strings.Contains(res.Err.Error(), "file is empty"); i++ {
		res = r.next(metrics.ReloadFailed, 3*time.Second)
	}
	if !strings.Contains(res.Err.Error(), "restart") || !strings.Contains(res.Err.Error(), "server") {
		t.Errorf("error: %v", res.Err)
	}
	if r.greenWeight() != 10 {
		t.Errorf("weights of a rejected file were applied: green %d", r.greenWeight())
	}
}

func TestAdminReloadEndpoint(t *testing.T) {
	blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	writeFile(t, token, "s3cret\n")
	path := filepath.Join(dir, "config.yaml")
	// A long debounce keeps the file watcher out of this test's way.
	extra := fmt.Sprintf("admin: { listen: \"127.0.0.1:0\", token_file: %q }\nreload: { debounce: 5s }", token)
	writeFile(t, path, strings.Replace(configText(10, blue.URL, green.URL, extra), "admin: { listen: \"127.0.0.1:0\" }\n", "", 1))
	r := startRig(t, path)
	call := func(method, auth string) (int, adminReply) {
		req, _ := http.NewRequest(method, r.admin+"/api/v1/reload", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := r.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a adminReply
		json.NewDecoder(resp.Body).Decode(&a)
		return resp.StatusCode, a
	}
	if code, _ := call(http.MethodPost, ""); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code, _ := call(http.MethodPost, "Bearer wrong"); code != 401 {
		t.Errorf("wrong token: %d", code)
	}
	if code, _ := call(http.MethodGet, "Bearer s3cret"); code != 405 {
		t.Errorf("GET: %d", code)
	}
	if code, a := call(http.MethodPost, "Bearer s3cret"); code != 200 || a.Result != "unchanged" {
		t.Errorf("unchanged file: %d %+v", code, a)
	}
	content, _ := os.ReadFile(path)
	writeFile(t, path, strings.Replace(string(content), "weight: 10", "weight: 11", 1))
	if code, a := call(http.MethodPost, "Bearer s3cret"); code != 422 || !strings.Contains(a.Error, "sum to 101%") {
		t.Errorf("bad file: %d %+v", code, a)
	}
	writeFile(t, path, strings.Replace(strings.Replace(string(content), "weight: 10", "weight: 25", 1), "weight: 90", "weight: 75", 1))
	if code, a := call(http.MethodPost, "Bearer s3cret"); code != 200 || a.Result != "applied" || r.greenWeight() != 25 {
		t.Errorf("good file: %d %+v green %d", code, a, r.greenWeight())
	}
}

type adminReply struct {
	Result string `json:"result"`
	Hash   string `json:"hash"`
	Error  string `json:"error"`
}

// A config file deleted and put back: the failure is logged, and so is
// its end.
func TestReloadRecoveryIsLogged(t *testing.T) {
	blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
	path := filepath.Join(t.TempDir(), "config.yaml")
	text := configText(10, blue.URL, green.URL)
	writeFile(t, path, text)
	cfg, err := config.Parse(path, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	results := make(chan ReloadResult, 100)
	srv, err := New(cfg, Options{ConfigPath: path, ConfigData: []byte(text), Logger: zap.New(core),
		OnReload: func(res ReloadResult) { results <- res }})
	if err != nil {
		t.Fatal(err)
	}
	serveFor(t, srv)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, results: results}
	r.next(metrics.ReloadFailed, 3*time.Second)
	writeFile(t, path, text)
	r.next(metrics.ReloadUnchanged, 3*time.Second)
	if n := logs.FilterMessage("config file readable and valid again").Len(); n != 1 {
		t.Fatalf("%d recovery lines after the file came back, want 1", n)
	}
	if n := logs.FilterMessage("config reload failed; the running config keeps serving").Len(); n < 1 {
		t.Fatal("the failure was not logged")
	}
}
