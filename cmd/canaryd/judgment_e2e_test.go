package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"canaryd/rollout"
)

// failedAnalyses counts the failed analyses in a rollout's history (held
// steps and the rollback itself).
func failedAnalyses(st rollout.Status) int {
	n := 0
	for _, e := range st.History {
		for _, v := range e.Verdicts {
			if v.Result == rollout.Fail && !v.Advisory {
				n++
				break
			}
		}
	}
	return n
}

// A burst of crafted requests at a path that fails only on the canary
// (30 plain ones, of which a few land on the canary by weight, and 10
// forcing the canary by header) does not roll back a good canary: the
// preview requests are judged apart, and the plain ones fail one analysis
// at most. Both pools fail 0.5% of all requests besides.
func TestCraftedBurstDoesNotRollBack(t *testing.T) {
	long(t)
	blue := backendProc(t, "blue", "--error-rate", "0.005")
	green := backendProc(t, "green", "--error-rate", "0.005", "--fail-path", "/boom")
	c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green,
		`{ steps: [10, 100], interval: 1s, min_requests: 100, failure_limit: 2,
       analysis: { max_error_rate: 0.02, compare_to_stable: {} } }`))
	g := startLoad(c.proxy+"/", 4, nil)
	defer g.halt()
	time.Sleep(1500 * time.Millisecond)
	boomed := 0
	for i := 0; i < 30; i++ {
		if code, pool := get(t, c.proxy+"/boom", nil); code == 500 && pool == "green" {
			boomed++
		}
	}
	for i := 0; i < 10; i++ {
		if code, pool := get(t, c.proxy+"/boom", map[string]string{"X-Canary-Pool": "green"}); code != 500 || pool != "green" {
			t.Fatalf("forced request to /boom: %d from %q", code, pool)
		}
	}
	// The previews are recorded, apart: the CLI (from the admin API) shows them.
	if out, err := exec.Command(binary, "status", "web", "--admin", c.admin).CombinedOutput(); err != nil || !strings.Contains(string(out), "10 preview (10 failed)") {
		t.Errorf("canaryd status does not show the previews: %v\n%s", err, out)
	}
	st := c.waitPhase(t, "web", rollout.Promoted, 60*time.Second)
	var preview bool
	for _, e := range st.History {
		for _, v := range e.Verdicts {
			preview = preview || (v.Check == "preview" && v.Advisory && strings.Contains(v.Reason, "failed"))
		}
	}
	t.Logf("%d plain crafted requests failed on the canary; %d failed analyses; promoted: %s", boomed, failedAnalyses(st), st.Reason)
	if !preview {
		t.Error("no advisory preview verdict in the history: were the forced requests judged apart?")
	}
	if n := failedAnalyses(st); n > 1 {
		t.Errorf("%d failed analyses; one burst fails one at most", n)
	}
}

// Only the listed peers may force a pool; with a secret, only requests
// that carry it. Others are routed by weight.
func TestForceRestrictions(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := runCanaryd(t, t.TempDir(), freeAddr(t), `  - name: closed
    match: { path_prefix: /closed }
    force: { header: X-Canary-Pool, allow_from: ["10.0.0.0/8"] }
    pools:
      - { name: blue, weight: 100, instances: ["`+blue+`"] }
      - { name: green, weight: 0, instances: ["`+green+`"] }
  - name: local
    match: { path_prefix: /local }
    force: { header: X-Canary-Pool, allow_from: ["127.0.0.0/8"] }
    pools:
      - { name: blue, weight: 100, instances: ["`+blue+`"] }
      - { name: green, weight: 0, instances: ["`+green+`"] }
  - name: secret
    match: { path_prefix: /secret }
    force: { header: X-Canary-Pool, secret_file: "`+secret+`" }
    pools:
      - { name: blue, weight: 100, instances: ["`+blue+`"] }
      - { name: green, weight: 0, instances: ["`+green+`"] }
`)
	for _, tc := range []struct {
		path   string
		hdr    map[string]string
		wantTo string
	}{
		{"/closed", map[string]string{"X-Canary-Pool": "green"}, "blue"},
		{"/local", map[string]string{"X-Canary-Pool": "green"}, "green"},
		{"/secret", map[string]string{"X-Canary-Pool": "green"}, "blue"},
		{"/secret", map[string]string{"X-Canary-Pool": "green", "X-Canary-Secret": "wrong"}, "blue"},
		{"/secret", map[string]string{"X-Canary-Pool": "green", "X-Canary-Secret": "s3cret"}, "green"},
	} {
		if code, pool := get(t, c.proxy+tc.path, tc.hdr); code != 200 || pool != tc.wantTo {
			t.Errorf("%s with %v: %d from %q, want %s", tc.path, tc.hdr, code, pool, tc.wantTo)
		}
	}
	// A rotated secret is read by SIGHUP, though the config file is the same.
	if err := os.WriteFile(secret, []byte("n3w\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.p.cmd.Process.Signal(syscall.SIGHUP)
	c.p.waitLog(t, "config applied")
	if _, pool := get(t, c.proxy+"/secret", map[string]string{"X-Canary-Pool": "green", "X-Canary-Secret": "s3cret"}); pool != "blue" {
		t.Errorf("the old secret still forces after the rotation: %s", pool)
	}
	if _, pool := get(t, c.proxy+"/secret", map[string]string{"X-Canary-Pool": "green", "X-Canary-Secret": "n3w"}); pool != "green" {
		t.Errorf("the new secret does not force: %s", pool)
	}
}

// A canary failing a true 0.5% of requests against max_error_rate 2% is
// never failed on a small sample (the interval straddles the bound until
// the evidence is in), and is promoted; one failing 5% is rolled back.
func TestErrorBoundWithConfidence(t *testing.T) {
	long(t) // seconds of load: outside the fast lane
	good1, good2 := backendProc(t, "blue", "--error-rate", "0.005"), backendProc(t, "green", "--error-rate", "0.005")
	bad1, bad2 := backendProc(t, "blue", "--error-rate", "0.005"), backendProc(t, "green", "--error-rate", "0.05")
	route := func(name, prefix, blue, green string) string {
		return `  - name: ` + name + `
    match: { path_prefix: ` + prefix + ` }
    rollout: { stable: blue, canary: green, steps: [20, 100], interval: 500ms, min_requests: 100, failure_limit: 2,
               analysis: { max_error_rate: 0.02 }, tripwire: { disabled: true } }
    pools:
      - { name: blue, weight: 100, instances: ["` + blue + `"] }
      - { name: green, weight: 0, instances: ["` + green + `"] }
`
	}
	c := runCanaryd(t, t.TempDir(), freeAddr(t), route("good", "/good", good1, good2)+route("bad", "/bad", bad1, bad2))
	gg, gb := startLoad(c.proxy+"/good", 3, nil), startLoad(c.proxy+"/bad", 3, nil)
	defer gg.halt()
	defer gb.halt()
	good := c.waitPhase(t, "good", rollout.Promoted, 90*time.Second)
	bad := c.waitPhase(t, "bad", rollout.RolledBack, 60*time.Second)
	t.Logf("good: %s\nbad: %s", good.Reason, bad.Reason)
	if n := failedAnalyses(good); n != 0 {
		t.Errorf("the 0.5%% canary failed %d analyses", n)
	}
	var interval bool
	for _, e := range good.History {
		for _, v := range e.Verdicts {
			interval = interval || (v.Check == "error_rate" && strings.Contains(v.Reason, "95% interval"))
		}
	}
	if !interval {
		t.Error("no error_rate verdict with its 95% interval in the good canary's history")
	}
	if !strings.Contains(bad.Reason, "error_rate") || !strings.Contains(bad.Reason, "above the bound") {
		t.Errorf("the 5%% canary was rolled back for %q", bad.Reason)
	}
}

func readState(t *testing.T, dir, route string) rollout.State {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "rollout-"+route+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var st rollout.State
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// SIGTERM with a long request in flight: the controller stops deciding
// before the drain (which sees no traffic), the saved state is the state
// at the signal, and the restart resumes that step. An abort during a
// drain is honoured and saved.
func TestSIGTERMStopsDecidingBeforeTheDrain(t *testing.T) {
	long(t)
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	state, adminAddr := t.TempDir(), freeAddr(t)
	routes := webRoute(blue, green, `{ steps: [10, 20, 30, 40, 100], interval: 300ms, min_requests: 20, max_inconclusive: 5 }`)
	c := runCanaryd(t, state, adminAddr, routes)
	g := startLoad(c.proxy+"/", 2, nil)
	var st rollout.Status
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if st = c.status(t, "web"); st.Step >= 3 {
			break
		}
	}
	g.halt()
	if st.Step < 3 || st.Phase != rollout.Progressing {
		t.Fatalf("before the signal: %s at step %d", st.Phase, st.Step)
	}
	// A long request keeps the drain going for 3 s: ten analyses at 300ms
	// on no traffic, which (with max_inconclusive 5) would pause it.
	long := make(chan int, 1)
	go func() {
		code, _ := get(t, c.proxy+"/?delay=3s", nil)
		long <- code
	}()
	time.Sleep(200 * time.Millisecond)
	st = c.status(t, "web")
	signalled := time.Now()
	c.p.cmd.Process.Signal(syscall.SIGTERM)
	if code := <-long; code != 200 {
		t.Errorf("the request in flight at the signal got %d", code)
	}
	if err := c.p.wait(t, 15*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	saved := readState(t, state, "web")
	if saved.Phase != st.Phase || saved.StepIndex+1 != st.Step || saved.Weight != int(st.CanaryWeight*100) {
		t.Errorf("saved %s at step %d (%d bp); at the signal it was %s at step %d (%.0f%%)",
			saved.Phase, saved.StepIndex+1, saved.Weight, st.Phase, st.Step, st.CanaryWeight)
	}
	for _, e := range saved.History {
		if e.At.After(signalled.Add(100 * time.Millisecond)) {
			t.Errorf("an event after the signal: %s %s", e.At.Format(time.RFC3339Nano), e.Reason)
		}
	}
	t.Logf("at the signal: %s at step %d (%.0f%%); saved: %s at step %d, %d events, the last at %v before the signal",
		st.Phase, st.Step, st.CanaryWeight, saved.Phase, saved.StepIndex+1, len(saved.History), signalled.Sub(saved.History[len(saved.History)-1].At).Round(time.Millisecond))
	// The restart resumes that step.
	c2 := startCanaryd(t, c.cfgPath)
	st2 := c2.status(t, "web")
	if st2.Phase != rollout.Progressing || st2.Step != st.Step || !strings.Contains(st2.Reason, "resumed after restart") {
		t.Fatalf("after restart: %s at step %d (%s); want progressing at step %d", st2.Phase, st2.Step, st2.Reason, st.Step)
	}
	// Abort during a drain: honoured, saved, and what the next start shows.
	go func() {
		code, _ := get(t, c2.proxy+"/?delay=3s", nil)
		long <- code
	}()
	time.Sleep(200 * time.Millisecond)
	c2.p.cmd.Process.Signal(syscall.SIGTERM)
	c2.p.waitLog(t, "draining")
	if out, err := exec.Command(binary, "abort", "web", "--admin", adminAddr).CombinedOutput(); err != nil || !strings.Contains(string(out), "rolled_back") {
		t.Errorf("abort during the drain: %v %s", err, out)
	}
	<-long
	if err := c2.p.wait(t, 15*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if saved := readState(t, state, "web"); saved.Phase != rollout.RolledBack {
		t.Errorf("after an abort during the drain the saved phase is %s", saved.Phase)
	}
	c3 := startCanaryd(t, c.cfgPath)
	if st3 := c3.status(t, "web"); st3.Phase != rollout.RolledBack {
		t.Errorf("after restart: %s, want rolled_back", st3.Phase)
	}
}
