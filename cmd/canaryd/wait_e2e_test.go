package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"canaryd/rollout"
)

// waitCLI runs `canaryd status ... --wait` (the built binary) to its end
// and returns what it printed and its exit code.
func waitCLI(t *testing.T, within time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"status"}, args...)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && ctx.Err() == nil:
		code = exit.ExitCode()
	default:
		t.Fatalf("canaryd status %v: %v (after %v); stdout %q, stderr %q", args, err, within, out.String(), errOut.String())
	}
	return out.String(), errOut.String(), code
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// status --wait exits with the rollout's outcome, from real rollouts: 0
// promoted, 1 rolled back, 3 still paused at the timeout; 2 for a usage
// error, an unknown route or one without a rollout; 4 when canaryd cannot
// be reached or refuses the token. It prints a line per transition.
func TestStatusWait(t *testing.T) {
	long(t)
	t.Run("promoted", func(t *testing.T) {
		blue, green := backendProc(t, "blue"), backendProc(t, "green")
		c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green,
			`{ steps: [50, 100], interval: 300ms, min_requests: 20,
       analysis: { max_error_rate: 0.05, max_latency_p99: 1s, compare_to_stable: { min_latency_difference: 100ms } } }`))
		g := startLoad(c.proxy+"/", 4, nil)
		defer g.halt()
		out, errOut, code := waitCLI(t, 90*time.Second, "web", "--wait", "--timeout", "60s", "--every", "100ms", "--admin", c.admin)
		t.Logf("stdout:\n%s", out)
		if code != 0 || !strings.Contains(lastLine(out), "web: promoted, step 2 of 2 (canary 100.00%)") {
			t.Fatalf("exit %d, last line %q, stderr %q; want 0 and promoted", code, lastLine(out), errOut)
		}
		if !strings.Contains(out, "web: progressing, step 1 of 2 (canary 50.00%)") {
			t.Errorf("no line for step 1: %q", out)
		}
		// Asked again after the decision, it answers at once; in JSON, one
		// object a line.
		out, _, code = waitCLI(t, 10*time.Second, "web", "--wait", "--output", "json", "--admin", c.admin)
		var line struct {
			Route, Phase string
			Step, Steps  int
		}
		if err := json.Unmarshal([]byte(out), &line); err != nil || code != 0 || line.Route != "web" || line.Phase != "promoted" || line.Step != 2 || line.Steps != 2 {
			t.Errorf("a promoted rollout in JSON: exit %d, %q (%v); want 0 and one promoted line", code, out, err)
		}
	})

	// canaryd killed and started again while --wait waits: within the
	// grace, --wait asks again and follows the resumed rollout to its end.
	t.Run("canaryd restarts", func(t *testing.T) {
		blue, green := backendProc(t, "blue"), backendProc(t, "green")
		c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green, `{ steps: [50, 100], interval: 300ms, min_requests: 20, pause_before: [100] }`))
		g := startLoad(c.proxy+"/", 2, nil)
		c.waitPhase(t, "web", rollout.Paused, 30*time.Second)
		g.halt()
		cmd := exec.Command(binary, "status", "web", "--wait", "--timeout", "50s", "--every", "100ms", "--admin", c.admin)
		var errOut strings.Builder
		cmd.Stderr = &errOut
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		lines := make(chan string, 16)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		var out []string
		select { // it has seen the pause before canaryd goes
		case l := <-lines:
			out = append(out, l)
		case <-time.After(20 * time.Second):
			t.Fatal("status --wait printed nothing in 20s")
		}
		c.p.cmd.Process.Signal(syscall.SIGKILL)
		c.p.wait(t, 10*time.Second)
		time.Sleep(time.Second) // it asks a canaryd that is not there
		c2 := startCanaryd(t, c.cfgPath)
		if out, err := exec.Command(binary, "resume", "web", "--admin", c2.admin).CombinedOutput(); err != nil {
			t.Fatalf("canaryd resume: %v: %s", err, out)
		}
		g2 := startLoad(c2.proxy+"/", 2, nil)
		defer g2.halt()
		for l := range lines {
			out = append(out, l)
		}
		err = cmd.Wait()
		t.Logf("stdout:\n%s", strings.Join(out, "\n"))
		if err != nil || !strings.Contains(out[0], "web: paused") || !strings.Contains(out[len(out)-1], "web: promoted") {
			t.Errorf("%v, stdout %q, stderr %q; want exit 0, the pause, then the promotion", err, out, errOut.String())
		}
	})

	t.Run("rolled back", func(t *testing.T) {
		blue, green := backendProc(t, "blue"), backendProc(t, "green", "--error-rate", "1")
		c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green,
			`{ steps: [10, 100], interval: 1m, min_requests: 1000, tripwire: { window: 10s, min_requests: 20, max_error_rate: 0.5 } }`))
		g := startLoad(c.proxy+"/", 4, nil)
		defer g.halt()
		out, errOut, code := waitCLI(t, 60*time.Second, "web", "--wait", "--timeout", "40s", "--every", "100ms", "--admin", c.admin)
		t.Logf("stdout:\n%s", out)
		if last := lastLine(out); code != 1 || !strings.Contains(last, "web: rolled_back") || !strings.Contains(last, "tripwire") {
			t.Fatalf("exit %d, last line %q, stderr %q; want 1 and the tripwire's rollback", code, last, errOut)
		}
	})

	t.Run("paused, and the usage errors", func(t *testing.T) {
		blue, green := backendProc(t, "blue"), backendProc(t, "green")
		c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green, `{ steps: [10, 100], interval: 1m, min_requests: 1000 }`)+
			fmt.Sprintf(`  - name: plain
    match: { path_prefix: /plain }
    pools:
      - { name: only, weight: 100, instances: [%q] }
`, blue))
		c.waitPhase(t, "web", rollout.Progressing, 10*time.Second)
		if out, err := exec.Command(binary, "pause", "web", "--admin", c.admin).CombinedOutput(); err != nil {
			t.Fatalf("canaryd pause: %v: %s", err, out)
		}
		start := time.Now()
		out, errOut, code := waitCLI(t, 30*time.Second, "web", "--wait", "--timeout", "1s", "--every", "100ms", "--admin", c.admin)
		if code != 3 || !strings.Contains(out, "web: paused") || !strings.Contains(errOut, "not decided after 1s (paused)") {
			t.Errorf("a paused rollout: exit %d after %v, stdout %q, stderr %q; want 3", code, time.Since(start), out, errOut)
		}
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"nope", "--wait", "--admin", c.admin}, `no route "nope"`},
			{[]string{"plain", "--wait", "--admin", c.admin}, `route "plain" has no rollout`},
			{[]string{"--wait", "--admin", c.admin}, "--wait needs a route"},
			{[]string{"web", "--wait", "--watch", "--admin", c.admin}, "do not go together"},
			{[]string{"web", "--wait", "--timeout", "0s", "--admin", c.admin}, "must be above 0"},
		} {
			if _, errOut, code := waitCLI(t, 10*time.Second, c.args...); code != 2 || !strings.Contains(errOut, c.want) {
				t.Errorf("status %v: exit %d, stderr %q; want 2 and %q", c.args, code, errOut, c.want)
			}
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		_, errOut, code := waitCLI(t, 10*time.Second, "web", "--wait", "--admin", freeAddr(t))
		if code != 4 || !strings.Contains(errOut, "connection refused") {
			t.Errorf("nothing listening: exit %d, stderr %q; want 4", code, errOut)
		}
		// An authenticating proxy in front of the admin API that refuses
		// the token (canaryd's own reads need none).
		refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, `{"error": "missing or wrong bearer token"}`)
		}))
		defer refuse.Close()
		_, errOut, code = waitCLI(t, 10*time.Second, "web", "--wait", "--admin", refuse.URL)
		if code != 4 || !strings.Contains(errOut, "refused the token") {
			t.Errorf("a refused token: exit %d, stderr %q; want 4", code, errOut)
		}
	})
}
