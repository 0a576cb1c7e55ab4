package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"canaryd/internal/freeport"
)

// binary is canaryd built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "canaryd-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "canaryd")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build canaryd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// long marks a test that takes seconds (demos, soak, Prometheus, the
// browser): go test -short (the fast lane) skips it; scripts/test.sh runs
// it.
func long(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("long test; runs without -short")
	}
}

// proc is a running canaryd process whose log lines are watched.
type proc struct {
	cmd   *exec.Cmd
	lines chan map[string]any
	done  chan error
	out   *bytes.Buffer
	mu    sync.Mutex
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(binary, args...), args)
}

// startCmd starts cmd, a canaryd process (perhaps under a wrapper such
// as prlimit), and watches its log lines; args name it in a failure.
func startCmd(t *testing.T, cmd *exec.Cmd, args []string) *proc {
	t.Helper()
	p := &proc{cmd: cmd, lines: make(chan map[string]any, 1000), done: make(chan error, 1), out: &bytes.Buffer{}}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case p.lines <- m:
				default:
				}
			}
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("canaryd %v output:\n%s", args, p.out.String())
			p.mu.Unlock()
		}
	})
	return p
}

// waitLog returns the first log line whose msg is msg.
func (p *proc) waitLog(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m := <-p.lines:
			if m["msg"] == msg {
				return m
			}
		case err := <-p.done:
			t.Fatalf("canaryd exited (%v) before logging %q", err, msg)
		case <-deadline:
			t.Fatalf("canaryd did not log %q in 15s", msg)
		}
	}
}

func (p *proc) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(within):
		t.Fatalf("canaryd still running after %v", within)
		return nil
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return freeport.On(t, "127.0.0.1")
}

// Requests in flight when SIGTERM arrives complete with 200, then the
// process exits 0.
func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	var arrived atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		time.Sleep(1500 * time.Millisecond)
		io.WriteString(w, "done")
	}))
	defer slow.Close()
	cfg := writeConfig(t, fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
server: { drain_timeout: 10s }
routes:
  - name: web
    pools:
      - { name: blue, weight: 100, instances: ["%s"] }
`, slow.URL))
	p := start(t, "run", "--config", cfg)
	addr := p.waitLog(t, "canaryd serving")["listen"].(string)

	const n = 10
	results := make(chan string, n)
	client := &http.Client{Timeout: 20 * time.Second}
	for i := 0; i < n; i++ {
		go func() {
			resp, err := client.Get("http://" + addr + "/")
			if err != nil {
				results <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
	}
	for end := time.Now().Add(10 * time.Second); arrived.Load() < n && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if arrived.Load() != n {
		t.Fatalf("only %d requests reached the backend", arrived.Load())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "draining")
	// A new connection after the drain began is refused.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("listener still accepts after SIGTERM")
	}
	for i := 0; i < n; i++ {
		if r := <-results; r != "200 done" {
			t.Errorf("in-flight request ended with %q", r)
		}
	}
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Errorf("exit after SIGTERM: %v (want 0)", err)
	}
}

// Real backend processes (canaryd backend) behind canaryd run: the first
// 1,000 requests split exactly 90/10.
func TestRunSplitsAcrossBackendProcesses(t *testing.T) {
	blueAddr, greenAddr := freeAddr(t), freeAddr(t)
	start(t, "backend", "--listen", blueAddr, "--pool", "blue").waitLog(t, "demo backend up")
	start(t, "backend", "--listen", greenAddr, "--pool", "green").waitLog(t, "demo backend up")
	cfg := writeConfig(t, fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
routes:
  - name: web
    pools:
      - { name: blue, weight: 90, instances: ["%s"] }
      - { name: green, weight: 10, instances: ["%s"] }
    force: { header: X-Canary-Pool }
`, blueAddr, greenAddr))
	p := start(t, "run", "--config", cfg)
	logged := p.waitLog(t, "canaryd serving")
	addr, adminAddr := logged["listen"].(string), logged["admin"].(string)
	if logged["upstream_fast_path"] != true {
		t.Errorf("the serving line says upstream_fast_path %v; the default is true", logged["upstream_fast_path"])
	}

	if resp, err := http.Get("http://" + adminAddr + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	counts := map[string]int{}
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < 1000; i++ {
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		counts[fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("X-Demo-Pool"))]++
	}
	if counts["200 blue"] != 900 || counts["200 green"] != 100 {
		t.Errorf("split over 1000 requests: %v; want 900 blue, 100 green", counts)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Errorf("exit: %v", err)
	}
}

func TestValidateCommand(t *testing.T) {
	good := writeConfig(t, "routes:\n  - name: web\n    pools:\n      - { name: a, weight: 100, instances: [\"127.0.0.1:1\"] }\n")
	out, err := exec.Command(binary, "validate", "--config", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok (1 routes, 1 pools, 1 instances") {
		t.Errorf("valid config: %v %s", err, out)
	}
	bad := writeConfig(t, `routes:
  - name: web
    pools:
      - { name: a, weight: 95.555, instances: ["127.0.0.1"] }
      - { name: a, weight: 3, instances: ["127.0.0.1:2"] }
`)
	out, err = exec.Command(binary, "validate", "--config", bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("invalid config exit: %v", err)
	}
	for _, want := range []string{"line 4", "more than two decimals", "needs host:port", "line 5", "used twice"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}
	// The upstream keys of the fast path and its head limit.
	upstream := writeConfig(t, "upstream: { fast_path: false, max_response_header_bytes: 131072 }\nroutes:\n  - name: web\n    pools:\n      - { name: a, weight: 100, instances: [\"127.0.0.1:1\"] }\n")
	if out, err := exec.Command(binary, "validate", "--config", upstream).CombinedOutput(); err != nil {
		t.Errorf("upstream keys: %v %s", err, out)
	}
	tooBig := writeConfig(t, "upstream: { max_response_header_bytes: 4194304 }\nroutes:\n  - name: web\n    pools:\n      - { name: a, weight: 100, instances: [\"127.0.0.1:1\"] }\n")
	if out, err := exec.Command(binary, "validate", "--config", tooBig).CombinedOutput(); err == nil || !strings.Contains(string(out), "line 1: upstream.max_response_header_bytes: 4194304 is outside 1024 to 1048576") {
		t.Errorf("a 4 MiB head limit: %v %s", err, out)
	}
	// run refuses the same file and says why.
	out, err = exec.Command(binary, "run", "--config", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "used twice") {
		t.Errorf("run on a bad config: %v %s", err, out)
	}
}

// README's first command: the demo serves, splits and stops cleanly.
func TestDemoCommand(t *testing.T) {
	long(t)
	cmd := exec.Command(binary, "demo", "--duration", "5s", "--listen", freeAddr(t), "--admin", freeAddr(t), "--rate", "100", "--backend-port", demoBase(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"canaryd demo: proxy http://", "split 2s:", "blue 9", "green ", " 0 errors", "stopped"} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	// The banner comes first and whole: what canaryd logs while it starts
	// (the rollout's first step, the backends) comes after it.
	lines := strings.SplitN(s, "\n", 5)
	if len(lines) < 4 || !strings.HasPrefix(lines[0], "canaryd demo: proxy http://") || !strings.HasPrefix(lines[1], "  dashboard http://") ||
		!strings.HasPrefix(lines[2], "  try: curl") || lines[3] != "  Ctrl-C stops." {
		t.Errorf("the banner is not the first four lines:\n%s", s)
	}
}

// A demo port held by another process fails the demo at once, before the
// banner, with advice that works for the demo: --backend-port for its
// backends, --listen and --admin for the proxy.
func TestDemoPortConflicts(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	_, port, _ := net.SplitHostPort(held.Addr().String())
	for _, tc := range []struct {
		args   []string
		advice string
	}{
		{[]string{"--backend-port", port, "--listen", freeAddr(t), "--admin", freeAddr(t)}, "--backend-port"},
		{[]string{"--backend-port", demoBase(t), "--listen", held.Addr().String(), "--admin", freeAddr(t)}, "--listen"},
	} {
		start := time.Now()
		out, err := exec.Command(binary, append([]string{"demo", "--duration", "20s"}, tc.args...)...).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || time.Since(start) > 10*time.Second {
			t.Fatalf("demo %v: %v after %v, want exit 1 at once\n%s", tc.args, err, time.Since(start), out)
		}
		if !strings.Contains(string(out), "address already in use") || !strings.Contains(string(out), tc.advice) || strings.Contains(string(out), "Ctrl-C stops") {
			t.Errorf("demo %v output:\n%s\nwant the bind error, advice naming %s, and no banner", tc.args, out, tc.advice)
		}
	}
	if out, err := exec.Command(binary, "demo", "--backend-port", "65530").CombinedOutput(); err == nil || !strings.Contains(string(out), "choose a port") {
		t.Errorf("--backend-port 65530 (a backend past 65535): %v\n%s", err, out)
	}
}

// demoBase is a port p where p, p+1 and p+10 (the demo backends' ports
// with --backend-port p) are free now.
func demoBase(t *testing.T) string {
	t.Helper()
	for i := 0; i < 100; i++ {
		// Below the kernel's ephemeral range (32768 and up here): a port
		// found free there can be taken, before the demo binds it, by any
		// outgoing connection of the tests running beside this one.
		p := 20000 + rand.IntN(12000)
		ok := true
		for _, d := range []int{0, 1, 10} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+d))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return fmt.Sprint(p)
		}
	}
	t.Fatal("no free port range for the demo backends")
	return ""
}

func TestUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	for _, args := range [][]string{{}, {"frobnicate"}, {"run", "--nope"}, {"validate", "a", "b"}, {"run", "--log-format", "xml"}, {"weight", "web"}, {"pause"}, {"status", "a", "b"}} {
		out.Reset()
		errb.Reset()
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if errb.Len() == 0 {
			t.Errorf("%v: no message on stderr", args)
		}
	}
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "canaryd ") {
		t.Errorf("version: %d %q", code, out.String())
	}
}

// Every command's -h exits 0 with its usage line, a description and an
// example; shell completion is there for bash, zsh and fish; validate
// takes the file as its argument; a long flag with one dash (Go's style,
// which canaryd took before) still works.
func TestCLIConventions(t *testing.T) {
	for _, c := range []struct{ cmd, usage string }{
		{"run", "canaryd run [flags]"}, {"validate", "canaryd validate [FILE] [flags]"}, {"demo", "canaryd demo [flags]"},
		{"backend", "canaryd backend [flags]"}, {"load", "canaryd load [flags]"}, {"status", "canaryd status [ROUTE] [flags]"},
		{"promote", "canaryd promote ROUTE [flags]"}, {"abort", "canaryd abort ROUTE [flags]"}, {"pause", "canaryd pause ROUTE [flags]"},
		{"resume", "canaryd resume ROUTE [flags]"}, {"weight", "canaryd weight ROUTE POOL=PERCENT... [flags]"},
		{"healthcheck", "canaryd healthcheck [flags]"},
	} {
		var out, errb bytes.Buffer
		if code := run([]string{c.cmd, "-h"}, &out, &errb); code != 0 {
			t.Errorf("%s -h: exit %d", c.cmd, code)
		}
		for _, want := range []string{"Usage:\n  " + c.usage, "Examples:\n  canaryd " + c.cmd, "-h, --help"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s -h lacks %q:\n%s", c.cmd, want, out.String())
			}
		}
	}
	// resume's help says what it does with a rolled-back release.
	var rh, rherr bytes.Buffer
	if run([]string{"resume", "-h"}, &rh, &rherr); !strings.Contains(rh.String(), "retry a rolled-back release") {
		t.Errorf("resume -h does not say it retries a rolled-back release:\n%s", rh.String())
	}
	var out, errb bytes.Buffer
	run([]string{"healthcheck", "-h"}, &out, &errb)
	if strings.Contains(out.String(), "--output") {
		t.Error("healthcheck -h lists --output, which it has no use for")
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out.Reset()
		if code := run([]string{"completion", shell}, &out, &errb); code != 0 || !strings.Contains(out.String(), "canaryd") || out.Len() < 1000 {
			t.Errorf("completion %s: exit %d, %d bytes", shell, code, out.Len())
		}
	}
	good := writeConfig(t, "routes:\n  - name: web\n    pools:\n      - { name: a, weight: 100, instances: [\"127.0.0.1:1\"] }\n")
	for _, args := range [][]string{{"validate", good}, {"validate", "--config", good}, {"validate", "-config", good}, {"validate", "-config=" + good}} {
		out.Reset()
		if code := run(args, &out, &errb); code != 0 || !strings.Contains(out.String(), "ok (1 routes") {
			t.Errorf("%v: exit %d %q %q", args, code, out.String(), errb.String())
		}
	}
	errb.Reset()
	if code := run([]string{"validate", filepath.Join(t.TempDir(), "missing.yaml")}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "missing.yaml") {
		t.Errorf("validate of a missing file: exit %d %q", code, errb.String())
	}
}

// SIGHUP reloads the file. The long debounce keeps the file watcher from
// getting there first.
func TestSIGHUPReloads(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer be.Close()
	body := `listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
reload: { debounce: 10s }
routes:
  - name: web
    pools:
      - { name: blue, weight: %d, instances: ["%s"] }
      - { name: green, weight: %d, instances: ["%s"] }
`
	cfg := writeConfig(t, fmt.Sprintf(body, 90, be.URL, 10, be.URL+"/g"))
	p := start(t, "run", "--config", cfg, "--log-level", "debug")
	p.waitLog(t, "config unchanged") // the watcher is armed and has checked once
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(body, 40, be.URL, 60, be.URL+"/g")), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	m := p.waitLog(t, "config applied")
	if m["source"] != "SIGHUP" || fmt.Sprint(m["weights_served"]) != "[web: blue=40 green=60]" {
		t.Errorf("applied log: %v", m)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Errorf("exit: %v", err)
	}
}

// startPrometheus runs a real Prometheus scraping targets every second and
// returns its base URL. Without the binary the test is skipped, unless
// CANARYD_REQUIRE_PROMETHEUS is set (scripts/test.sh sets it after
// installing Debian's prometheus package), in which case it fails.
func startPrometheus(t *testing.T, targets ...string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CANARYD_REQUIRE_PROMETHEUS") != "" {
			t.Fatal("prometheus is not installed; run ./scripts/test.sh, which installs it")
		}
		t.Skip("prometheus not installed (./scripts/test.sh installs it)")
	}
	dir := t.TempDir()
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = fmt.Sprintf("%q", tg)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: canaryd
    static_configs: [{ targets: [%s] }]
`, strings.Join(quoted, ", "))), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	base := "http://" + addr
	daemon(t, "prometheus", exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn"), syscall.SIGTERM, 10*time.Second, base+"/-/ready", http.StatusOK)
	return base
}

// promQuery runs an instant query and returns each series' labels and value.
func promQuery(t *testing.T, base, q string) []map[string]string {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Status != "success" {
		t.Fatalf("query %q: %v %s", q, err, body.Status)
	}
	var out []map[string]string
	for _, r := range body.Data.Result {
		r.Metric["value"] = fmt.Sprint(r.Value[1])
		out = append(out, r.Metric)
	}
	return out
}

// A real Prometheus scrapes canaryd and finds canaryd_requests_total for
// both pools.
func TestPrometheusScrapesCanaryd(t *testing.T) {
	long(t)
	blueAddr, greenAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	start(t, "backend", "--listen", blueAddr, "--pool", "blue").waitLog(t, "demo backend up")
	start(t, "backend", "--listen", greenAddr, "--pool", "green").waitLog(t, "demo backend up")
	cfg := writeConfig(t, fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: %q }
routes:
  - name: web
    pools:
      - { name: blue, weight: 80, instances: ["%s"] }
      - { name: green, weight: 20, instances: ["%s"] }
`, adminAddr, blueAddr, greenAddr))
	p := start(t, "run", "--config", cfg)
	addr := p.waitLog(t, "canaryd serving")["listen"].(string)
	prom := startPrometheus(t, adminAddr)
	for i := 0; i < 500; i++ {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var got map[string]string
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		got = map[string]string{}
		for _, s := range promQuery(t, prom, `sum by (pool) (canaryd_requests_total{route="web",code="200"})`) {
			got[s["pool"]] = s["value"]
		}
		if got["blue"] == "400" && got["green"] == "100" {
			return
		}
	}
	t.Errorf("Prometheus sees %v; want blue 400 and green 100", got)
}

// validate checks a config directory whole: the main file and every file
// its include globs name; a bad included file is named with its line.
func TestValidateIncludedFiles(t *testing.T) {
	main := writeConfig(t, "include: [\"routes.d/*.yaml\"]\n")
	rd := filepath.Join(filepath.Dir(main), "routes.d")
	if err := os.MkdirAll(rd, 0o755); err != nil {
		t.Fatal(err)
	}
	route := func(name string) string {
		return "routes:\n  - name: " + name + "\n    match: { path_prefix: /" + name + " }\n    pools:\n      - { name: a, weight: 100, instances: [\"127.0.0.1:1\"] }\n"
	}
	for _, n := range []string{"billing", "search"} {
		if err := os.WriteFile(filepath.Join(rd, n+".yaml"), []byte(route(n)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(binary, "validate", main).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok (2 routes, 2 pools, 2 instances") {
		t.Errorf("valid set: %v %s", err, out)
	}
	bad := filepath.Join(rd, "search.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(route("search"), "127.0.0.1:1", "127.0.0.1", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(binary, "validate", main).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), bad) || !strings.Contains(string(out), "line 5") || !strings.Contains(string(out), "needs host:port") {
		t.Errorf("a bad included file: %v %s", err, out)
	}
}
