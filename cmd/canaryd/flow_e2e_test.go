package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"canaryd/adminclient"
	"canaryd/internal/dnsmasqtest"
	"canaryd/rollout"

	"github.com/chromedp/chromedp"
)

// freePortOn is a port free on every one of ips (A records carry
// addresses; discovery.port is the one port of them all).
func freePortOn(t *testing.T, ips ...string) int {
	t.Helper()
	for range 100 {
		addr := freeAddr(t)
		_, p, _ := net.SplitHostPort(addr)
		free := true
		for _, ip := range ips {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, p))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			var port int
			fmt.Sscan(p, &port)
			return port
		}
	}
	t.Fatal("no port free on every address")
	return 0
}

// heartbeat is an instance's boot script: it registers itself with curl
// every second (a lease of 5s: a loaded machine may stall a heartbeat or two), as user data or a lifecycle hook would,
// until it is stopped (the instance goes away, or its group scales in).
type heartbeat struct {
	cmd *exec.Cmd
}

func startHeartbeat(t *testing.T, curl, admin, pool, version, addr string) *heartbeat {
	t.Helper()
	body := fmt.Sprintf(`{"version": %q, "instances": [%q], "ttl": "5s"}`, version, addr)
	url := "http://" + admin + "/api/v1/routes/web/pools/" + pool + "/instances"
	script := fmt.Sprintf(`while :; do %s -sf -X POST -H 'Content-Type: application/json' -d '%s' %s >/dev/null; sleep 1; done`, curl, body, url)
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &heartbeat{cmd: cmd}
	t.Cleanup(h.stop)
	return h
}

// stop ends the loop and its curl (the process group).
func (h *heartbeat) stop() {
	if h.cmd.Process != nil {
		syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		h.cmd.Wait()
		h.cmd.Process = nil
	}
}

// waitSwap waits until the rollout releases into pool, the canary now.
func waitSwap(t *testing.T, c *canaryRun, pool string) {
	t.Helper()
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st := c.status(t, "web")
		if st.Phase == rollout.Progressing && st.Canary == pool {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("no release started in %s: %s, canary %s (%s)", pool, st.Phase, st.Canary, st.Reason)
		}
	}
}

// waitPoolHolds waits until the route's pool holds exactly addrs, all in
// rotation.
func waitPoolHolds(t *testing.T, admin, pool string, within time.Duration, addrs ...string) time.Duration {
	t.Helper()
	addrs = slices.Sorted(slices.Values(addrs))
	start := time.Now()
	for {
		v, err := adminclient.New(admin, "").Instances("web", pool)
		if err == nil {
			var got []string
			for _, in := range v.Instances {
				if in.Healthy != nil && *in.Healthy {
					got = append(got, strings.TrimPrefix(in.Addr, "http://"))
				}
			}
			slices.Sort(got)
			if strings.Join(got, ",") == strings.Join(addrs, ",") && len(got) == len(v.Instances) {
				return time.Since(start)
			}
		}
		if time.Since(start) > within {
			t.Fatalf("pool %s does not hold %v in rotation within %v (%+v, %v)", pool, addrs, within, v, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The flow canaryd exists for, with real processes: the v1 group behind
// canaryd, its instances registered by their own boot scripts (curl, with
// a lease and a heartbeat); the v2 group comes up and registers itself
// into the other pool; the rollout starts by itself and is judged in
// process and by a PromQL check against a real Prometheus; promoted; the
// v1 group scales to zero (one instance deregisters, the other's lease
// runs out), drains and is gone; then v3 arrives in the pool v1 left,
// which becomes the canary, and is promoted in turn. Steady load through
// canaryd the whole time: not one failed request.
func TestReleaseFlowWithRegistrations(t *testing.T) {
	long(t)
	curl := tool(t, "curl", "CANARYD_REQUIRE_CURL")
	chromium := tool(t, "chromium", "CANARYD_REQUIRE_CHROMIUM")
	adminAddr := freeAddr(t)
	prom := startPrometheus(t, adminAddr)
	errorsQuery := `(sum(rate(canaryd_requests_total{route="{{route}}",pool="{{canary}}",code=~"5.."}[{{interval}}])) or vector(0)) / sum(rate(canaryd_requests_total{route="{{route}}",pool="{{canary}}"}[{{interval}}]))`
	c := runCanaryd(t, t.TempDir(), adminAddr, fmt.Sprintf(`  - name: web
    health: { active: { path: /healthz, interval: 200ms } }
    rollout:
      stable: blue
      canary: green
      steps: [50, 100]
      interval: 4s
      min_requests: 20
      analysis:
        prometheus:
          url: %s
          checks:
            - { name: error_rate, query: %q, max: 0.05 }
    pools:
      - { name: blue, weight: 100, registered: true }
      - { name: green, weight: 0, registered: true }
`, prom, errorsQuery))
	group := func(version string, n int) []string {
		var out []string
		for i := 0; i < n; i++ {
			out = append(out, backendProc(t, version))
		}
		return out
	}
	beats := func(pool, version string, addrs []string) []*heartbeat {
		var hs []*heartbeat
		for _, a := range addrs {
			hs = append(hs, startHeartbeat(t, curl, adminAddr, pool, version, a))
		}
		return hs
	}

	// v1: two instances register themselves into blue.
	v1 := group("v1", 2)
	v1beats := beats("blue", "v1", v1)
	waitPoolHolds(t, c.admin, "blue", 10*time.Second, v1...)
	if st := c.status(t, "web"); st.Phase != rollout.Idle || !strings.Contains(st.Reason, "no instances yet") {
		t.Fatalf("before v2: %s (%s)", st.Phase, st.Reason)
	}
	load := startLoad(c.proxy+"/", 4, nil)
	defer load.halt()

	// v2 comes up: the rollout starts by itself and is promoted.
	v2 := group("v2", 2)
	registered := time.Now()
	v2beats := beats("green", "v2", v2)
	for load.pools()["v2"] == 0 {
		if time.Since(registered) > 10*time.Second {
			t.Fatal("v2 took no request within 10s of registering")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("registration to the first request served by v2: %v", time.Since(registered).Round(time.Millisecond))
	st := c.waitPhase(t, "web", rollout.Promoted, 90*time.Second)
	if st.Canary != "green" || st.CanaryVersion != "v2" || st.StableVersion != "v1" {
		t.Fatalf("v2 promoted as %+v", st)
	}
	promPassed := false
	for _, e := range st.History {
		for _, v := range e.Verdicts {
			promPassed = promPassed || (v.Check == "prometheus:error_rate" && v.Result == rollout.Pass)
		}
	}
	if !promPassed {
		t.Error("v2 promoted without a passing Prometheus verdict")
	}

	// v1 scales to zero: one instance deregisters itself (its lifecycle
	// hook), the other just stops renewing; both drain and are gone.
	v1beats[0].stop()
	if out, err := exec.Command(curl, "-sf", "-X", "DELETE", "http://"+adminAddr+"/api/v1/routes/web/pools/blue/instances/"+v1[0]).CombinedOutput(); err != nil {
		t.Fatalf("deregister: %v %s", err, out)
	}
	v1beats[1].stop()
	stopped := time.Now()
	took := waitPoolHolds(t, c.admin, "blue", 10*time.Second)
	t.Logf("heartbeat stopped to removed (a 5s lease, renewed every second): %v", took.Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond) // drained: nothing in flight there any more
	_ = stopped

	// v3 arrives in blue, the pool at 0%: it is the canary now.
	v3 := group("v3", 2)
	v3beats := beats("blue", "v3", v3)
	waitSwap(t, c, "blue")
	st = c.waitPhase(t, "web", rollout.Promoted, 90*time.Second)
	if st.Canary != "blue" || st.Stable != "green" || st.CanaryVersion != "v3" {
		t.Fatalf("v3 promoted as %+v", st)
	}
	// The dashboard shows the roles as they are now, with their versions.
	ctx := browser(t, chromium, 60*time.Second)
	if _, err := chromedp.Run(ctx, chromedp.Navigate("http://"+adminAddr+"/")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.body.innerText.includes("green (v2) → blue (v3)") && document.querySelector('[data-version="blue"]').innerText.includes("v3")`)); err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("the dashboard does not show green (v2) → blue (v3): %v\n%s", err, text)
	}
	// And v2's group leaves in turn.
	for _, h := range v2beats {
		h.stop()
	}
	waitPoolHolds(t, c.admin, "green", 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	load.halt()
	total, failed := load.total.Load(), load.failed.Load()
	if failed != 0 || total == 0 {
		t.Fatalf("through the whole flow: %d requests, %d failed", total, failed)
	}
	t.Logf("v1 → v2 → v3 through two registered pools: %d requests, 0 failed; by version %v", total, load.pools())
	_ = v3beats
}

// The same flow with DNS instead of registrations, blue/green this time:
// each pool is a name in a real dnsmasq (blue.web.test, green.web.test);
// a group's instances appear in and leave its name. v2's name filling up
// is the release (no versions: a pool that fills up after being empty is
// a new one); it is previewed by header at 0% and switched at once; v1's
// name empties; v3 appears in blue's name, which becomes the canary.
// Public load and the previews through it all: not one failed request.
func TestReleaseFlowWithDNS(t *testing.T) {
	long(t)
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"}
	port := freePortOn(t, ips...)
	for i, ip := range ips {
		backendProcAt(t, fmt.Sprintf("%s:%d", ip, port), []string{"v1", "v2", "v3"}[i/2])
	}
	hosts := func(blue, green []string) string {
		var b strings.Builder
		for _, ip := range blue {
			fmt.Fprintf(&b, "%s blue.web.test\n", ip)
		}
		for _, ip := range green {
			fmt.Fprintf(&b, "%s green.web.test\n", ip)
		}
		return b.String()
	}
	d := dnsmasqtest.Start(t, hosts(ips[0:2], nil))
	c := runCanaryd(t, t.TempDir(), freeAddr(t), fmt.Sprintf(`  - name: web
    force: { header: X-Canary-Pool }
    health: { active: { path: /healthz, interval: 200ms } }
    rollout: { stable: blue, canary: green, strategy: blue_green, interval: 1s, min_requests: 30 }
    pools:
      - { name: blue, weight: 100, discovery: { dns: blue.web.test, port: %d, resolver: %q, interval: 200ms, empty_after: 2 } }
      - { name: green, weight: 0, discovery: { dns: green.web.test, port: %d, resolver: %q, interval: 200ms, empty_after: 2 } }
`, port, d.Addr, port, d.Addr))
	at := func(ips ...string) []string {
		var out []string
		for _, ip := range ips {
			out = append(out, fmt.Sprintf("%s:%d", ip, port))
		}
		return out
	}
	waitPoolHolds(t, c.admin, "blue", 10*time.Second, at(ips[0:2]...)...)
	if st := c.status(t, "web"); st.Phase != rollout.Idle {
		t.Fatalf("before v2: %s (%s)", st.Phase, st.Reason)
	}
	public := startLoad(c.proxy+"/", 3, nil)
	defer public.halt()
	preview := startPreview(t, c)
	defer preview.halt()

	// v2 appears in green's name.
	d.SetHosts(hosts(ips[0:2], ips[2:4]))
	d.HUP()
	took := waitPoolHolds(t, c.admin, "green", 10*time.Second, at(ips[2:4]...)...)
	t.Logf("DNS change to v2 in rotation: %v (interval 200ms)", took.Round(time.Millisecond))
	st := c.waitPhase(t, "web", rollout.Promoted, 60*time.Second)
	if st.Canary != "green" {
		t.Fatalf("v2 promoted as %+v", st)
	}
	// v1's instances leave the name: after empty_after resolutions blue
	// is empty.
	d.SetHosts(hosts(nil, ips[2:4]))
	d.HUP()
	waitPoolHolds(t, c.admin, "blue", 10*time.Second)
	// v3 appears in blue's name: blue is the canary now.
	d.SetHosts(hosts(ips[4:6], ips[2:4]))
	d.HUP()
	waitSwap(t, c, "blue")
	st = c.waitPhase(t, "web", rollout.Promoted, 60*time.Second)
	if st.Canary != "blue" || st.Stable != "green" {
		t.Fatalf("v3 promoted as %+v", st)
	}
	time.Sleep(300 * time.Millisecond)
	public.halt()
	preview.halt()
	pools := public.pools()
	if public.failed.Load() != 0 || preview.failed.Load() != 0 || pools["v1"] == 0 || pools["v2"] == 0 || pools["v3"] == 0 {
		t.Fatalf("public: %d requests, %d failed, by version %v; previews: %d, %d failed", public.total.Load(), public.failed.Load(), pools,
			preview.total.Load(), preview.failed.Load())
	}
	t.Logf("v1 → v2 → v3 through two DNS names, blue/green: %d public requests (%v) and %d previews, 0 failed",
		public.total.Load(), pools, preview.total.Load())
}

// startPreview sends the preview traffic of a blue/green rollout: each
// request names the current canary pool (it changes with the roles).
func startPreview(t *testing.T, c *canaryRun) *loadGen {
	g := &loadGen{stop: make(chan struct{}), byPool: map[string]int{}}
	client := adminclient.New(c.admin, "")
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		hc := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-g.stop:
				return
			default:
			}
			// A tester previews a release once its instances are in
			// rotation (before, a request forced to the pool has no
			// instance to go to: 503).
			rv, err := client.Route("web")
			inRotation := 0
			for _, p := range rv.Pools {
				for _, in := range p.Instances {
					if rv.Rollout != nil && p.Name == rv.Rollout.Canary && in.Healthy {
						inRotation++
					}
				}
			}
			if err != nil || rv.Rollout == nil || rv.Rollout.Phase != rollout.Progressing || inRotation == 0 {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			for i := 0; i < 10; i++ {
				req, _ := http.NewRequest(http.MethodGet, c.proxy+"/", nil)
				req.Header.Set("X-Canary-Pool", rv.Rollout.Canary)
				resp, err := hc.Do(req)
				g.total.Add(1)
				if err != nil {
					g.failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					g.failed.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	return g
}

// Instances nobody here wrote register and serve: Python's http.server
// as v1, nginx as v2, each registered with curl and probed at /. The
// rollout of v2 starts by itself and is promoted; no request fails.
func TestRegisteredServersNobodyHereWrote(t *testing.T) {
	long(t)
	curl := tool(t, "curl", "CANARYD_REQUIRE_CURL")
	v1, v2 := pythonServer(t, "python-v1"), nginxServer(t, "nginx-v2")
	adminAddr := freeAddr(t)
	c := runCanaryd(t, t.TempDir(), adminAddr, `  - name: web
    health: { active: { path: /, interval: 200ms } }
    rollout: { stable: blue, canary: green, steps: [50, 100], interval: 1s, min_requests: 20 }
    pools:
      - { name: blue, weight: 100, registered: true }
      - { name: green, weight: 0, registered: true }
`)
	register := func(pool, version, addr string) {
		t.Helper()
		body := fmt.Sprintf(`{"version": %q, "instances": [%q]}`, version, addr)
		if out, err := exec.Command(curl, "-sf", "-X", "POST", "-H", "Content-Type: application/json", "-d", body,
			"http://"+adminAddr+"/api/v1/routes/web/pools/"+pool+"/instances").CombinedOutput(); err != nil {
			t.Fatalf("curl registration of %s: %v %s", addr, err, out)
		}
	}
	register("blue", "v1", v1)
	waitPoolHolds(t, c.admin, "blue", 10*time.Second, v1)
	load := startLoad(c.proxy+"/", 3, nil)
	defer load.halt()
	register("green", "v2", v2)
	st := c.waitPhase(t, "web", rollout.Promoted, 60*time.Second)
	if st.CanaryVersion != "v2" {
		t.Fatalf("promoted %+v", st)
	}
	load.halt()
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		resp, err := http.Get(c.proxy + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[strings.TrimSpace(string(b))] = true
	}
	if !seen["nginx-v2"] || load.failed.Load() != 0 || load.total.Load() == 0 {
		t.Fatalf("after the promotion: %v; load %d requests, %d failed", seen, load.total.Load(), load.failed.Load())
	}
	t.Logf("python http.server (v1) → nginx (v2), both registered with curl: %d requests, 0 failed", load.total.Load())
}
