package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"canaryd/admin"
	"canaryd/adminclient"
	"canaryd/rollout"
)

// backendProc starts `canaryd backend` for a pool and returns its address.
func backendProc(t *testing.T, pool string, extra ...string) string {
	t.Helper()
	addr := freeAddr(t)
	start(t, append([]string{"backend", "--listen", addr, "--pool", pool}, extra...)...).waitLog(t, "demo backend up")
	return addr
}

// canaryRun is a canaryd process with a rollout route "web".
type canaryRun struct {
	p       *proc
	cfgPath string
	proxy   string
	admin   string
}

func runCanaryd(t *testing.T, stateDir, adminAddr, routes string) *canaryRun {
	t.Helper()
	cfg := writeConfig(t, fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: %q }
state_dir: %q
routes:
%s`, adminAddr, stateDir, routes))
	return startCanaryd(t, cfg)
}

func startCanaryd(t *testing.T, cfg string) *canaryRun {
	t.Helper()
	p := start(t, "run", "--config", cfg)
	m := p.waitLog(t, "canaryd serving")
	return &canaryRun{p: p, cfgPath: cfg, proxy: "http://" + m["listen"].(string), admin: m["admin"].(string)}
}

func (c *canaryRun) status(t *testing.T, route string) rollout.Status {
	t.Helper()
	rv, err := adminclient.New(c.admin, "").Route(route)
	if err != nil || rv.Rollout == nil {
		t.Fatalf("route %s: %v (%+v)", route, err, rv)
	}
	return *rv.Rollout
}

func (c *canaryRun) waitPhase(t *testing.T, route string, phase rollout.Phase, within time.Duration) rollout.Status {
	t.Helper()
	var st rollout.Status
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if st = c.status(t, route); st.Phase == phase {
			return st
		}
	}
	t.Fatalf("route %s not %s within %v: %s at step %d (%s)", route, phase, within, st.Phase, st.Step, st.Reason)
	return st
}

// loadGen sends requests from n clients until stopped, counting answers by
// pool and the non-2xx ones.
type loadGen struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	total  atomic.Int64
	failed atomic.Int64
	mu     sync.Mutex
	byPool map[string]int
	once   sync.Once
}

func startLoad(url string, n int, hdr map[string]string) *loadGen {
	g := &loadGen{stop: make(chan struct{}), byPool: map[string]int{}}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	for i := 0; i < n; i++ {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			for {
				select {
				case <-g.stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				resp, err := client.Do(req)
				g.total.Add(1)
				if err != nil {
					g.failed.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					g.failed.Add(1)
				}
				g.mu.Lock()
				g.byPool[resp.Header.Get("X-Demo-Pool")]++
				g.mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return g
}

// halt stops the load and waits for it (again: nothing).
func (g *loadGen) halt() {
	g.once.Do(func() { close(g.stop) })
	g.wg.Wait()
}

// pools counts the answers so far by the pool (X-Demo-Pool) that gave
// them.
func (g *loadGen) pools() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]int, len(g.byPool))
	for k, v := range g.byPool {
		out[k] = v
	}
	return out
}

func get(t *testing.T, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Demo-Pool")
}

// webRoute is route "web": stable blue, canary green, and the rollout's
// other settings as a flow mapping.
func webRoute(blue, green, rolloutBlock string) string {
	rolloutBlock = strings.Replace(rolloutBlock, "{", "{ stable: blue, canary: green,", 1)
	return fmt.Sprintf(`  - name: web
    force: { header: X-Canary-Pool }
    rollout: %s
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
`, rolloutBlock, blue, green)
}

// A healthy canary walks every step to 100 with embedded analysis, and the
// split at each step is the step's weight.
func TestRolloutHealthyCanaryPromotes(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	// The latency comparison gets a wide effect bound: this test is about
	// the steps and the split, and on a loaded 2-core machine a few dozen
	// samples of two identical pools can differ by 10ms at the p99.
	c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green,
		`{ steps: [10, 50, 100], interval: 300ms, min_requests: 30,
       analysis: { max_error_rate: 0.05, max_latency_p99: 1s, compare_to_stable: { min_latency_difference: 100ms } } }`))
	// The split is checked against the weight the table serves (the
	// route view's pool weight): the rollout's status names a step the
	// moment it is decided, and the table follows a few milliseconds later
	// (after the state is saved), which a loaded machine makes visible.
	served := func() (step int, phase rollout.Phase, green float64) {
		rv, err := adminclient.New(c.admin, "").Route("web")
		if err != nil || rv.Rollout == nil {
			t.Fatalf("route web: %v", err)
		}
		return rv.Rollout.Step, rv.Rollout.Phase, rv.Pools[1].Weight
	}
	checked := map[float64]int{}
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); {
		step, phase, weight := served()
		if phase == rollout.Promoted {
			break
		}
		green := 0
		for i := 0; i < 100; i++ {
			if code, pool := get(t, c.proxy+"/", nil); code == 200 && pool == "green" {
				green++
			}
		}
		if step2, phase2, weight2 := served(); step2 == step && phase2 == rollout.Progressing && weight2 == weight && phase == rollout.Progressing {
			checked[weight]++
			if d := float64(green) - weight; d > 2 || d < -2 {
				t.Errorf("at canary %.0f%%: %d of 100 requests went to green", weight, green)
			}
		}
	}
	st := c.waitPhase(t, "web", rollout.Promoted, time.Second)
	var weights []string
	for _, e := range st.History {
		if e.Kind == rollout.KindTransition {
			weights = append(weights, fmt.Sprintf("%s@%d", e.To, e.WeightBP/100))
		}
	}
	if got := strings.Join(weights, " "); got != "progressing@10 progressing@50 promoted@100" {
		t.Errorf("history: %s", got)
	}
	if checked[10] == 0 || checked[50] == 0 {
		t.Errorf("split checked at %v; want both steps", checked)
	}
	for end := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, _, w := served(); w == 100 {
			break
		} else if time.Now().After(end) {
			t.Fatalf("promoted, and the table serves green at %.0f%% 2s later", w)
		}
	}
	if _, pool := get(t, c.proxy+"/", nil); pool != "green" {
		t.Errorf("after promotion a request went to %s", pool)
	}
}

// A canary failing every request is rolled back by the tripwire within
// seconds; the errors clients saw stay within weight × rate × time.
func TestRolloutTripwireRollsBackFailingCanary(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green", "--error-rate", "1")
	c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green,
		`{ steps: [10, 100], interval: 1m, min_requests: 1000, tripwire: { window: 10s, min_requests: 20, max_error_rate: 0.5 } }`))
	start := time.Now()
	g := startLoad(c.proxy+"/", 4, nil)
	st := c.waitPhase(t, "web", rollout.RolledBack, 15*time.Second)
	took := time.Since(start)
	sent := g.total.Load()
	time.Sleep(300 * time.Millisecond)
	failedAtRollback := g.failed.Load()
	extra := g.total.Load()
	g.halt()
	rate := float64(sent) / took.Seconds()
	// The canary gets 10%; the tripwire needs 20 of its requests and looks
	// every second, so the errors are bounded by 10% of what was sent in
	// the time to collect 20, plus one second for the next look, plus a
	// margin for requests in flight.
	bound := int64(0.10*rate*(20/(0.10*rate)+1.0)) + 20
	t.Logf("rolled back %v after the canary went live (%s); %d of %d requests failed (bound %d); %d sent after",
		took.Round(10*time.Millisecond), st.Reason, failedAtRollback, sent, bound, extra-sent)
	if failedAtRollback > bound {
		t.Errorf("%d client-visible errors, bound %d", failedAtRollback, bound)
	}
	if !strings.HasPrefix(st.Reason, "tripwire") || took > 10*time.Second {
		t.Errorf("rollback after %v by %q; want the tripwire within seconds", took, st.Reason)
	}
	// Status shows the cause: the tripwire's verdict, not a stale hold.
	if len(st.LastVerdicts) != 1 || st.LastVerdicts[0].Check != "tripwire" || st.LastVerdicts[0].Result != rollout.Fail {
		t.Errorf("last verdicts after the tripwire: %+v", st.LastVerdicts)
	}
	if out, err := exec.Command(binary, "status", "web", "--admin", c.admin).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "fail          tripwire") || strings.Contains(string(out), "min_requests") {
		t.Errorf("canaryd status after the tripwire:\n%s", out)
	}
	for i := 0; i < 50; i++ {
		if code, pool := get(t, c.proxy+"/", nil); code != 200 || pool != "blue" {
			t.Fatalf("after rollback: %d from %s", code, pool)
		}
	}
}

// A canary failing 5% of requests fails its analyses and is rolled back
// after failure_limit intervals.
func TestRolloutFaultyCanaryRollsBackAfterFailureLimit(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green", "--error-rate", "0.05")
	c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green,
		`{ steps: [20, 100], interval: 1s, min_requests: 100, failure_limit: 2,
       analysis: { max_error_rate: 0.01 }, tripwire: { disabled: true } }`))
	g := startLoad(c.proxy+"/", 4, nil)
	start := time.Now()
	st := c.waitPhase(t, "web", rollout.RolledBack, 30*time.Second)
	took := time.Since(start)
	g.halt()
	failed, total := g.failed.Load(), g.total.Load()
	// The canary takes 20% of requests and fails 5% of them until the
	// rollback: the expected errors are 1% of what was sent; allow 3×.
	t.Logf("rolled back after %v (%s); %d of %d requests failed", took.Round(10*time.Millisecond), st.Reason, failed, total)
	if st.Failures != 2 || !strings.Contains(st.Reason, "error_rate") {
		t.Errorf("rollback: failures %d, reason %q", st.Failures, st.Reason)
	}
	if float64(failed) > 0.03*float64(total)+5 {
		t.Errorf("%d of %d requests failed; 20%% × 5%% predicts about 1%%", failed, total)
	}
}

func TestRolloutSlowCanaryRollsBack(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green", "--latency", "150ms")
	c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green,
		`{ steps: [50, 100], interval: 1s, min_requests: 20, failure_limit: 2, analysis: { max_latency_p99: 50ms } }`))
	g := startLoad(c.proxy+"/", 8, nil)
	st := c.waitPhase(t, "web", rollout.RolledBack, 30*time.Second)
	g.halt()
	if !strings.Contains(st.Reason, "latency_p99") {
		t.Errorf("rolled back for %q", st.Reason)
	}
}

// No traffic: the rollout holds and never promotes; when traffic comes, it
// goes on.
func TestRolloutHoldsWithoutTraffic(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green,
		`{ steps: [50, 100], interval: 200ms, min_requests: 20, max_inconclusive: 1000 }`))
	time.Sleep(2 * time.Second)
	st := c.status(t, "web")
	if st.Phase != rollout.Progressing || st.Step != 1 || st.Inconclusive < 5 {
		t.Fatalf("without traffic: %s step %d, %d inconclusive", st.Phase, st.Step, st.Inconclusive)
	}
	if len(st.LastVerdicts) == 0 || st.LastVerdicts[0].Result != rollout.Inconclusive {
		t.Errorf("verdicts without traffic: %+v", st.LastVerdicts)
	}
	out, err := exec.Command(binary, "status", "web", "--admin", c.admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "progressing, step 1 of 2 (canary 50.00%)") || !strings.Contains(string(out), "next analysis in") ||
		!strings.Contains(string(out), "inconclusive  min_requests") {
		t.Errorf("canaryd status while holding:\n%s", out)
	}
	g := startLoad(c.proxy+"/", 2, nil)
	c.waitPhase(t, "web", rollout.Promoted, 20*time.Second)
	g.halt()
}

// kill -TERM mid-rollout and start again: the same step and weights, then
// the CLI resumes it to the end. A weight edit in the file meanwhile is not
// applied: the rollout owns those weights.
func TestRolloutResumesAfterRestart(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	state, adminAddr := t.TempDir(), freeAddr(t)
	routes := webRoute(blue, green, `{ steps: [10, 50, 100], interval: 300ms, min_requests: 20, pause_before: [100] }`)
	c := runCanaryd(t, state, adminAddr, routes)
	g := startLoad(c.proxy+"/", 2, nil)
	st := c.waitPhase(t, "web", rollout.Paused, 30*time.Second)
	g.halt()
	if st.Step != 2 || st.CanaryWeight != 50 {
		t.Fatalf("before restart: step %d at %.0f%%", st.Step, st.CanaryWeight)
	}
	c.p.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.p.wait(t, 15*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	c2 := startCanaryd(t, c.cfgPath)
	st = c2.status(t, "web")
	if st.Phase != rollout.Paused || st.Step != 2 || st.CanaryWeight != 50 {
		t.Fatalf("after restart: %s step %d at %.0f%%", st.Phase, st.Step, st.CanaryWeight)
	}
	green50 := 0
	for i := 0; i < 100; i++ {
		if _, pool := get(t, c2.proxy+"/", nil); pool == "green" {
			green50++
		}
	}
	if green50 < 48 || green50 > 52 {
		t.Errorf("after restart %d of 100 requests went to green, want 50", green50)
	}
	// Editing the weights by hand while the rollout runs changes nothing.
	data, _ := os.ReadFile(c.cfgPath)
	edited := strings.Replace(strings.Replace(string(data), "weight: 100", "weight: 70", 1), "weight: 0,", "weight: 30,", 1)
	if err := os.WriteFile(c.cfgPath, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	c2.p.waitLog(t, "weight edit not applied: the route's rollout sets its stable and canary weights in every phase (after an abort or a promotion too); to set weights by hand, write the weights served (canaryd status) in the file's pools and remove the rollout block")
	if m := c2.p.waitLog(t, "config applied"); fmt.Sprint(m["weights_served"]) != "[web: blue=50 green=50]" {
		t.Errorf("config applied logs %v; want the weights served (the rollout's 50/50), not the file's 70/30", m["weights_served"])
	}
	if st = c2.status(t, "web"); st.CanaryWeight != 50 {
		t.Errorf("weight edit changed the rollout: canary %.0f%%", st.CanaryWeight)
	}
	// Pausing what is paused already is not a failure.
	out, err := exec.Command(binary, "pause", "web", "--admin", adminAddr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "web: already paused, nothing to do") {
		t.Errorf("canaryd pause of a paused rollout: %v %s", err, out)
	}
	// The CLI steps it past the gate.
	out, err = exec.Command(binary, "resume", "web", "--admin", adminAddr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "web: promoted, step 3, canary 100.00%") {
		t.Errorf("canaryd resume: %v %s", err, out)
	}
	out, err = exec.Command(binary, "status", "web", "--admin", adminAddr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rollout canary blue → green: promoted, step 3 of 3") {
		t.Errorf("canaryd status: %v\n%s", err, out)
	}
	if out, err := exec.Command(binary, "promote", "web", "--admin", adminAddr).CombinedOutput(); err != nil || !strings.Contains(string(out), "already promoted") {
		t.Errorf("canaryd promote of a promoted rollout: %v %s", err, out)
	}
	out, err = exec.Command(binary, "status", "--admin", adminAddr, "--output", "json").CombinedOutput()
	var routes2 []admin.RouteView
	if err != nil || json.Unmarshal(out, &routes2) != nil || len(routes2) != 1 || routes2[0].Rollout.Phase != rollout.Promoted {
		t.Errorf("canaryd status --output json: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "abort", "nope", "--admin", adminAddr).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "route \"nope\"") {
		t.Errorf("abort of an unknown route: %v %s", err, out)
	}
}

// Blue/green: the preview is reachable by header at 0%, the switch is one
// atomic step, and a rollback restores blue at once.
func TestBlueGreen(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	adminAddr := freeAddr(t)
	c := runCanaryd(t, t.TempDir(), adminAddr, webRoute(blue, green,
		`{ strategy: blue_green, interval: 300ms, min_requests: 30 }`))
	// Before enough preview traffic, public traffic is all blue.
	for i := 0; i < 30; i++ {
		if _, pool := get(t, c.proxy+"/", nil); pool != "blue" {
			t.Fatalf("public request went to %s before the switch", pool)
		}
	}
	for i := 0; i < 30; i++ {
		if _, pool := get(t, c.proxy+"/", map[string]string{"X-Canary-Pool": "green"}); pool != "green" {
			t.Fatalf("preview request went to %s", pool)
		}
	}
	// Sequential public requests across the switch: blue, blue..., then
	// green only.
	var seq []string
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); {
		_, pool := get(t, c.proxy+"/", nil)
		seq = append(seq, pool)
		if pool == "green" && len(seq) > 1 && seq[len(seq)-2] == "green" && c.status(t, "web").Phase == rollout.Promoted {
			break
		}
	}
	switched := false
	for i, p := range seq {
		if p == "green" {
			switched = true
		} else if switched {
			t.Fatalf("request %d after the switch went to %s: %v", i, p, seq)
		}
	}
	if !switched {
		t.Fatal("never switched to green")
	}
	if out, err := exec.Command(binary, "abort", "web", "--admin", adminAddr).CombinedOutput(); err != nil {
		t.Fatalf("abort: %v %s", err, out)
	}
	if _, pool := get(t, c.proxy+"/", nil); pool != "blue" {
		t.Errorf("right after rollback a request went to %s", pool)
	}
}

// Rollouts judged by PromQL against a real Prometheus scraping canaryd: a
// healthy canary is promoted, a faulty one rolled back, and an unreachable
// Prometheus pauses the rollout instead of promoting it.
func TestPrometheusDrivenRollout(t *testing.T) {
	long(t)
	good1, good2 := backendProc(t, "blue"), backendProc(t, "green")
	bad1, bad2 := backendProc(t, "blue"), backendProc(t, "green", "--error-rate", "0.5")
	blind1, blind2 := backendProc(t, "blue"), backendProc(t, "green")
	adminAddr := freeAddr(t)
	prom := startPrometheus(t, adminAddr)
	dead := "http://" + freeAddr(t)
	// "or vector(0)": without any 5xx the numerator has no series, and the
	// whole query would be empty (no data, inconclusive).
	errorsQuery := `(sum(rate(canaryd_requests_total{route="{{route}}",pool="{{canary}}",code=~"5.."}[{{interval}}])) or vector(0)) / sum(rate(canaryd_requests_total{route="{{route}}",pool="{{canary}}"}[{{interval}}]))`
	route := func(name, prefix, blue, green, url string) string {
		return fmt.Sprintf(`  - name: %s
    match: { path_prefix: %s }
    rollout:
      steps: [50, 100]
      interval: 4s
      min_requests: 20
      failure_limit: 2
      max_inconclusive: 3
      stable: blue
      canary: green
      tripwire: { disabled: true }
      analysis:
        prometheus:
          url: %s
          timeout: 2s
          checks:
            - { name: error_rate, query: %q, max: 0.05 }
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
`, name, prefix, url, errorsQuery, blue, green)
	}
	c := runCanaryd(t, t.TempDir(), adminAddr,
		route("good", "/good", good1, good2, prom)+route("bad", "/bad", bad1, bad2, prom)+route("blind", "/blind", blind1, blind2, dead))
	loads := []*loadGen{startLoad(c.proxy+"/good", 2, nil), startLoad(c.proxy+"/bad", 2, nil), startLoad(c.proxy+"/blind", 2, nil)}
	defer func() {
		for _, g := range loads {
			g.halt()
		}
	}()
	good := c.waitPhase(t, "good", rollout.Promoted, 60*time.Second)
	bad := c.waitPhase(t, "bad", rollout.RolledBack, 60*time.Second)
	blind := c.waitPhase(t, "blind", rollout.Paused, 60*time.Second)
	t.Logf("good: %s; bad: %s; blind: %s", good.Reason, bad.Reason, blind.Reason)
	if !strings.Contains(bad.Reason, "prometheus:error_rate") {
		t.Errorf("bad canary rolled back for %q", bad.Reason)
	}
	if !strings.Contains(blind.Reason, "query failed") || blind.CanaryWeight != 50 {
		t.Errorf("unreachable Prometheus: %s at %.0f%% (%s)", blind.Phase, blind.CanaryWeight, blind.Reason)
	}
	var passed bool
	for _, e := range good.History {
		for _, v := range e.Verdicts {
			passed = passed || (v.Check == "prometheus:error_rate" && v.Result == rollout.Pass)
		}
	}
	if !passed {
		t.Error("the good canary was promoted without a passing Prometheus verdict")
	}
}

// Every way out a weights refusal names works: with a rollout block the
// rollout owns the weights (an abort does not hand them back, and the
// message does not pretend it does); writing the weights served in the
// file and removing the block, as the message says, lets canaryd weight
// set them. (Here the file's weights are the ones served after the abort:
// removing the block moves nothing. Otherwise the reload is refused:
// app's TestRemovingARolloutNeverMovesTrafficSilently.)
func TestWeightAdviceWorks(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green, `{ steps: [10, 100], interval: 1m }`))
	weight := func() (string, error) {
		out, err := exec.Command(binary, "weight", "web", "blue=50", "green=50", "--admin", c.admin).CombinedOutput()
		return string(out), err
	}
	const advice = "to set weights by hand, write the weights served (canaryd status) in the file's pools and remove the rollout block"
	if out, err := weight(); err == nil || !strings.Contains(out, advice) || strings.Contains(out, "abort it") {
		t.Fatalf("weight with a rollout: %v %s", err, out)
	}
	if out, err := exec.Command(binary, "abort", "web", "--admin", c.admin).CombinedOutput(); err != nil {
		t.Fatalf("abort: %v %s", err, out)
	}
	if out, err := weight(); err == nil || !strings.Contains(out, advice) {
		t.Fatalf("weight after abort: %v %s (the rollout still owns the weights)", err, out)
	}
	// The advice: the weights served (blue 100, green 0: the file's
	// already) in the file, and the block removed.
	data, _ := os.ReadFile(c.cfgPath)
	var kept []string
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "    rollout:") {
			kept = append(kept, line)
		}
	}
	if err := os.WriteFile(c.cfgPath, []byte(strings.Join(kept, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	c.p.waitLog(t, "config applied")
	if out, err := weight(); err != nil || !strings.Contains(out, "web: weights blue=50 green=50") {
		t.Fatalf("weight once the block is gone: %v %s", err, out)
	}
	green50 := 0
	for i := 0; i < 100; i++ {
		if _, pool := get(t, c.proxy+"/", nil); pool == "green" {
			green50++
		}
	}
	if green50 < 48 || green50 > 52 {
		t.Errorf("%d of 100 requests to green after weight 50/50", green50)
	}
}
