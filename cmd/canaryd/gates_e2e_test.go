package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"canaryd/rollout"
)

// The built binary runs a release through real gate receivers: Python's
// http.server as the smoke test (404 until the file it serves appears: a
// failure that counts, then a pass), a signing-checking receiver at each
// step, a receiver that answers 10 MB before 100%. Another route's gate
// hangs for its whole timeout meanwhile, and holds only that route.
func TestGatesEndToEnd(t *testing.T) {
	long(t)
	py := tool(t, "python3", "CANARYD_REQUIRE_PYTHON")
	smokeDir := t.TempDir()
	pyAddr := freeAddr(t)
	host, port, _ := net.SplitHostPort(pyAddr)
	serveUntilDone(t, exec.Command(py, "-m", "http.server", port, "--bind", host, "--directory", smokeDir), pyAddr)

	key := filepath.Join(t.TempDir(), "gate.key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asked []string
	step := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Route, At  string
			NextWeight float64 `json:"next_weight"`
		}
		json.Unmarshal(body, &req)
		mu.Lock()
		asked = append(asked, fmt.Sprintf("%s@%s→%g", req.Route, req.At, req.NextWeight))
		mu.Unlock()
		if r.Header.Get("X-Canary-Signature") != rollout.Sign("0123456789abcdef0123456789abcdef", body) {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"verdict":"fail","reason":"bad signature"}`)
			return
		}
		io.WriteString(w, `{"verdict":"pass","reason":"load test: p99 41ms"}`)
	}))
	defer step.Close()
	big := bytes.Repeat([]byte("{"), 10<<20)
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(big) }))
	defer huge.Close()
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	// Closed after canaryd is gone (cleanups run last first): its gate
	// holds a request open for the whole timeout.
	t.Cleanup(hung.Close)

	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green, `{ steps: [20, 60, 100], interval: 1s, min_requests: 20, failure_limit: 3,
       analysis: { max_error_rate: 0.05 },
       gates: [
         { name: smoke, at: pre_traffic, method: GET, url: "http://`+pyAddr+`/smoke-ok.txt", retries: 0 },
         { name: load, at: step, url: "`+step.URL+`", secret_file: `+key+` },
         { name: big, at: pre_promotion, url: "`+huge.URL+`" } ] }`)+
		fmt.Sprintf(`  - name: hung
    match: { path_prefix: /hung }
    rollout: { stable: blue, canary: green, steps: [50, 100], interval: 300ms, min_requests: 5,
               gates: [ { name: stuck, at: step, url: %q, timeout: 1m, retries: 0 } ] }
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
`, hung.URL, blue, green))
	g := startLoad(c.proxy+"/", 2, nil)
	defer g.halt()
	gh := startLoad(c.proxy+"/hung", 2, nil)
	defer gh.halt()

	// Python answers 404: the smoke gate fails (1 of failure_limit 3), and
	// the canary gets no request meanwhile.
	var st rollout.Status
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st = c.status(t, "web")
		if st.Failures >= 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the smoke gate never failed: %s: %s", st.Phase, st.Reason)
		}
	}
	if st.Gate == nil || st.Gate.At != "pre_traffic" || st.CanaryWeight != 0 || !strings.Contains(st.Reason, "status 404") {
		t.Fatalf("after the 404: gate %+v at %v%%: %s", st.Gate, st.CanaryWeight, st.Reason)
	}
	text, _ := exec.Command(binary, "status", "web", "--admin", c.admin).CombinedOutput()
	if !strings.Contains(string(text), "waiting on pre_traffic gates smoke") {
		t.Errorf("canaryd status shows no gate:\n%s", text)
	}
	if n := g.pools()["green"]; n != 0 {
		t.Fatalf("the canary served %d requests before its smoke test passed", n)
	}
	if err := os.WriteFile(filepath.Join(smokeDir, "smoke-ok.txt"), []byte("ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := waitOutcome(t, c.admin, "web")
	if code != 0 {
		t.Fatalf("web: exit %d:\n%s", code, out)
	}
	st = c.status(t, "web")
	var reasons []string
	for _, e := range st.History {
		reasons = append(reasons, e.Reason)
	}
	all := strings.Join(reasons, "\n")
	for _, want := range []string{"pre_traffic gates passed (gate:smoke pass)", "step gates passed (gate:load pass)", "pre_promotion gates passed (gate:big pass)"} {
		if !strings.Contains(all, want) {
			t.Errorf("history lacks %q:\n%s", want, all)
		}
	}
	mu.Lock()
	if got := strings.Join(asked, " "); got != "web@step→60 web@step→100" {
		t.Errorf("step gate asked %q", got)
	}
	mu.Unlock()
	// The hung route waits on its gate all along, at its first step.
	if h := c.status(t, "hung"); h.Gate == nil || h.Gate.At != "step" || h.Step != 1 {
		t.Errorf("hung: gate %+v, step %d, %s", h.Gate, h.Step, h.Reason)
	}
	metrics := scrapeText(t, c.admin)
	for _, want := range []string{`canaryd_rollout_gate_total{gate="smoke",route="web",verdict="fail"} 1`, `canaryd_rollout_gate_total{gate="big",route="web",verdict="pass"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// waitOutcome runs `canaryd status ROUTE --wait` to its end.
func waitOutcome(t *testing.T, admin, route string) (string, int) {
	t.Helper()
	out, errOut, code := waitCLI(t, 90*time.Second, route, "--wait", "--timeout", "60s", "--every", "100ms", "--admin", admin)
	return out + errOut, code
}

// scrapeText is the admin's /metrics page.
func scrapeText(t *testing.T, adminAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
