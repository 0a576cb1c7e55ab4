package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"canaryd/rollout"

	"github.com/chromedp/chromedp"
)

// chainServer is a service instance nobody here wrote the framework of:
// Python's http.server answering with its version. With an upstream it is
// a frontend that calls the backend route through canaryd for every
// request, forwarding the version header it was given (as an application
// forwards a trace header), and answers "fe=V be=W".
const chainServer = `
import http.server, sys, urllib.request
ver, port, upstream = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's
    # algorithm and the peer's delayed ACK cost 40 ms a request.
    disable_nagle_algorithm = True
    def do_GET(self):
        got = self.headers.get("X-Canary-Version", "")
        body = ver
        if upstream != "-":
            req = urllib.request.Request(upstream + "/api/x")
            if got:
                req.add_header("X-Canary-Version", got)
            with urllib.request.urlopen(req, timeout=10) as r:
                body = "fe=%s be=%s" % (ver, r.read().decode())
        body = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Stamped", got)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
`

// One version across services: a user routed to the canary frontend
// reaches the canary backend, behind the same canaryd's other route,
// while both routes roll out at their own pace. Clients (127.0.0.2) are
// not trusted and cannot choose a version; the frontends (127.0.0.1)
// are.
func TestVersionPropagatesAcrossAChain(t *testing.T) {
	py := tool(t, "python3", "CANARYD_REQUIRE_PYTHON")
	script := filepath.Join(t.TempDir(), "chain.py")
	if err := os.WriteFile(script, []byte(chainServer), 0o644); err != nil {
		t.Fatal(err)
	}
	proxyAddr := freeAddr(t)
	instance := func(ver, upstream string) string {
		addr := freeAddr(t)
		_, port, _ := net.SplitHostPort(addr)
		return serveUntilDone(t, exec.Command(py, script, ver, port, upstream), addr)
	}
	beV1, beV2 := instance("v1", "-"), instance("v2", "-")
	feV1, feV2 := instance("v1", "http://"+proxyAddr), instance("v2", "http://"+proxyAddr)
	dir := t.TempDir()
	c := startCanaryd(t, writeConfig(t, fmt.Sprintf(`listen: %q
admin: { listen: "127.0.0.1:0" }
state_dir: %q
trusted_proxies: ["127.0.0.1/32"]
routes:
  - name: frontend
    propagate: { header: X-Canary-Version }
    pools:
      - { name: blue, weight: 100, version: v1, instances: [%q] }
      - { name: green, weight: 0, version: v2, instances: [%q] }
    rollout: { stable: blue, canary: green, steps: [10, 30, 60, 100], interval: 1500ms, min_requests: 40 }
  - name: backend
    match: { path_prefix: /api/ }
    propagate: { header: X-Canary-Version }
    pools:
      - { name: blue, weight: 100, version: v1, instances: [%q] }
      - { name: green, weight: 0, version: v2, instances: [%q] }
    rollout: { stable: blue, canary: green, steps: [5, 50, 100], interval: 2500ms, min_requests: 40 }
`, proxyAddr, filepath.Join(dir, "state"), feV1, feV2, beV1, beV2)))

	client := func() *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 16}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 20 * time.Second}
	}()
	get := func(path, version string) (string, string, error) {
		req, _ := http.NewRequest(http.MethodGet, c.proxy+path, nil)
		if version != "" {
			req.Header.Set("X-Canary-Version", version)
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		return string(b), resp.Header.Get("X-Stamped"), err
	}
	// An untrusted client cannot pick the backend's canary by naming its
	// version: it gets the weighted pick (5% or so).
	v2 := 0
	for range 200 {
		body, _, err := get("/api/x", "v2")
		if err != nil {
			t.Fatal(err)
		}
		if body == "v2" {
			v2++
		}
	}
	if v2 > 60 {
		t.Fatalf("an untrusted client naming v2 reached the backend's canary %d times in 200", v2)
	}

	const total = 10000
	var mu sync.Mutex
	chains := map[string]int{}
	var mixed []string
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for range next {
				body, stamped, err := get("/", "v2") // the client's own header is replaced
				mu.Lock()
				switch {
				case err != nil:
					mixed = append(mixed, err.Error())
				default:
					chains[body]++
					var fe, be string
					fmt.Sscanf(body, "fe=%s be=%s", &fe, &be)
					if fe != be || stamped != fe {
						mixed = append(mixed, fmt.Sprintf("%s (stamped %q)", body, stamped))
					}
				}
				mu.Unlock()
			}
		})
	}
	for i := range total {
		next <- i
	}
	close(next)
	wg.Wait()
	fe, be := c.status(t, "frontend"), c.status(t, "backend")
	t.Logf("chains %v; frontend %s at %.0f%%, backend %s at %.0f%%", chains, fe.Phase, fe.CanaryWeight, be.Phase, be.CanaryWeight)
	if len(mixed) > 0 {
		t.Fatalf("%d of %d chains mixed versions or failed, e.g. %v", len(mixed), total, mixed[:min(5, len(mixed))])
	}
	if chains["fe=v1 be=v1"] == 0 || chains["fe=v2 be=v2"] == 0 {
		t.Fatalf("chains %v: want users on both versions", chains)
	}
	for _, st := range []rollout.Status{fe, be} {
		if st.Phase != rollout.Promoted && (st.Phase != rollout.Progressing || st.Step < 2) {
			t.Errorf("route %s: %s at step %d (%s); the rollout should have moved on during the run", st.Route, st.Phase, st.Step, st.Reason)
		}
	}
	// The backend's canary was judged on the propagated requests (it has
	// no other traffic).
	if !strings.Contains(fmt.Sprint(be.History), "analysis passed") {
		t.Errorf("the backend's rollout never passed an analysis: %v", be.History)
	}
}

// The dashboard, in a real browser, and `canaryd status` say who sees the
// canary: the segment phase and its rule, and each pool's targeted and
// preview requests apart from the weighted ones.
func TestDashboardShowsWhoSeesTheCanary(t *testing.T) {
	chromium := tool(t, "chromium", "CANARYD_REQUIRE_CHROMIUM")
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	c := runCanaryd(t, t.TempDir(), "127.0.0.1:0", fmt.Sprintf(`  - name: web
    force: { header: X-Canary-Pool }
    rules:
      - { name: beta, match: { header: { X-Beta: { exact: "1" } } } }
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
    rollout: { stable: blue, canary: green, segment: beta, steps: [10, 100], interval: 1h }
`, blue, green))
	c.waitPhase(t, "web", rollout.SegmentPhase, 10*time.Second)
	for _, r := range []struct {
		hdr  map[string]string
		n    int
		pool string
	}{{map[string]string{"X-Beta": "1"}, 7, "green"}, {map[string]string{"X-Canary-Pool": "green"}, 3, "green"}, {nil, 4, "blue"}} {
		for range r.n {
			if _, pool := get(t, c.proxy+"/", r.hdr); pool != r.pool {
				t.Fatalf("%v went to %q, want %s", r.hdr, pool, r.pool)
			}
		}
	}
	out, err := exec.Command(binary, "status", "web", "--admin", c.admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "  7 targeted (0 failed)  3 preview (0 failed)") || !strings.Contains(string(out), "segment phase: rule beta's requests only") {
		t.Errorf("canaryd status (%v):\n%s", err, out)
	}
	ctx := browser(t, chromium, 60*time.Second)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+c.admin+"/"), chromedp.WaitVisible(`[data-phase="web"].segment`)); err != nil {
		t.Fatal(err)
	}
	greenText, err := chromedp.Run(ctx, chromedp.Text(`td[data-traffic="green"]`))
	if err != nil || greenText != "7 targeted · 3 preview" {
		t.Errorf("green's traffic on the dashboard: %q (%v); want 7 targeted · 3 preview", greenText, err)
	}
	blueText, err := chromedp.Run(ctx, chromedp.Text(`td[data-traffic="blue"]`))
	if err != nil || blueText != "4 weighted" {
		t.Errorf("blue's traffic on the dashboard: %q (%v); want 4 weighted", blueText, err)
	}
	page, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil || !strings.Contains(page, "segment phase, rule beta's requests only, no weighted user") {
		t.Errorf("the dashboard does not say the rollout is in its segment phase (%v)", err)
	}
}
