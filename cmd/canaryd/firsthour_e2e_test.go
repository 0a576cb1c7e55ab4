package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"canaryd/rollout"
)

// pythonServer starts Python's own http.server on a loopback port,
// serving a directory with one index.html that says name: a server nobody
// here wrote, with no /healthz.
func pythonServer(t *testing.T, name string) string {
	t.Helper()
	py := tool(t, "python3", "CANARYD_REQUIRE_PYTHON")
	dir := site(t, t.TempDir(), name)
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	return serveUntilDone(t, exec.Command(py, "-m", "http.server", port, "--bind", host, "--directory", dir), addr)
}

// tool finds a program the test runs, on PATH or at one of the paths
// given (nginx sits in /usr/sbin, off a user's PATH). Missing, it skips
// the test, or fails it when env is set: scripts/test.sh installs it and
// sets env, so CI never skips.
func tool(t *testing.T, name, env string, paths ...string) string {
	t.Helper()
	if bin, err := exec.LookPath(name); err == nil {
		return bin
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv(env) != "" {
		t.Fatalf("%s is not installed, and %s is set; run ./scripts/test.sh, which installs it", name, env)
	}
	t.Skipf("%s not installed (./scripts/test.sh installs it)", name)
	return ""
}

// site writes dir/index.html saying name, and returns dir.
func site(t *testing.T, dir, name string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serveUntilDone starts a server process that listens on addr, waits
// until it accepts, and stops it when the test ends.
func serveUntilDone(t *testing.T, cmd *exec.Cmd, addr string) string {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
	}
	t.Fatalf("%s on %s did not start", filepath.Base(cmd.Path), addr)
	return ""
}

// Getting started with servers nobody here wrote: Python's http.server
// answers no /healthz. canaryd status says so, instance by instance, with
// the fix; an outage of every pool is no rollout failure (nothing rolls
// back while it lasts); and once the probe path is fixed the instances come
// back and the release goes on to promotion.
func TestYourOwnServersWithAProbePathTheyLack(t *testing.T) {
	long(t)
	v1a, v1b, v2 := pythonServer(t, "v1"), pythonServer(t, "v1"), pythonServer(t, "v2")
	route := func(path string) string {
		return fmt.Sprintf(`  - name: shop
    health:
      active: { path: %s, interval: 300ms, unhealthy_interval: 300ms, timeout: 250ms, rise: 1, fall: 2 }
    pools:
      - { name: v1, weight: 100, instances: [%q, %q] }
      - { name: v2, weight: 0, instances: [%q] }
    rollout: { stable: v1, canary: v2, steps: [50, 100], interval: 1s, min_requests: 20, analysis: { max_error_rate: 0.05 } }
`, path, v1a, v1b, v2)
	}
	c := runCanaryd(t, t.TempDir(), freeAddr(t), route("/healthz"))
	g := startLoad(c.proxy+"/", 2, nil)
	defer g.halt()

	statusText := func() string {
		out, _ := exec.Command(binary, "status", "shop", "--admin", c.admin).CombinedOutput()
		return string(out)
	}
	var text string
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if text = statusText(); strings.Contains(text, "2 of 2 v1 instances out") && strings.Contains(text, "1 of 1 v2 instance out") {
			break
		}
	}
	for _, want := range []string{"2 of 2 v1 instances out: active: 2 probes in a row failed; last: GET /healthz: status 404", "set health.active.path to one it answers, such as /"} {
		if !strings.Contains(text, want) {
			t.Fatalf("canaryd status lacks %q:\n%s", want, text)
		}
	}
	// The outage lasts a few analyses: none of them is a failure.
	time.Sleep(3 * time.Second)
	if st := c.status(t, "shop"); st.Phase == rollout.RolledBack || st.Failures > 0 {
		t.Fatalf("an outage of every pool counted against the release: %s, %d failures (%s)", st.Phase, st.Failures, st.Reason)
	}
	// The fix the message names.
	if err := os.WriteFile(c.cfgPath, []byte(strings.Replace(mustRead(t, c.cfgPath), "path: /healthz", "path: /", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.p.waitLog(t, "config applied")
	st := c.waitPhase(t, "shop", rollout.Promoted, 30*time.Second)
	if st.Failures > 0 {
		t.Errorf("promoted with %d failures", st.Failures)
	}
	if text := statusText(); strings.Contains(text, " out: ") {
		t.Errorf("instances still out once the probe path is right:\n%s", text)
	}
}
