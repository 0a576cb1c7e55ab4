package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"canaryd/admin"

	cdplog "github.com/chromedp/cdproto/log"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// demoProc runs `canaryd demo` and returns its admin address. The demo's
// backends use the fixed ports of the shipped config, so demos run one at a
// time and each is waited for.
func demoProc(t *testing.T, args ...string) string {
	t.Helper()
	adminAddr, _ := demoProcs(t, args...)
	return adminAddr
}

// demoProcs is demoProc, returning the proxy's address too.
func demoProcs(t *testing.T, args ...string) (adminAddr, proxyAddr string) {
	t.Helper()
	adminAddr, proxyAddr = freeAddr(t), freeAddr(t)
	daemon(t, "demo", exec.Command(binary, append([]string{"demo", "--listen", proxyAddr, "--admin", adminAddr, "--duration", "3m", "--log-format", "json"}, args...)...),
		syscall.SIGINT, 15*time.Second, "http://"+adminAddr+"/readyz", http.StatusOK)
	return adminAddr, proxyAddr
}

func demoPhase(t *testing.T, adminAddr string) string {
	resp, err := http.Get("http://" + adminAddr + "/api/v1/routes/web")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var rv admin.RouteView
	if json.NewDecoder(resp.Body).Decode(&rv) != nil || rv.Rollout == nil {
		return ""
	}
	return rv.Rollout.Phase.String()
}

func waitDemo(t *testing.T, adminAddr, phase string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if demoPhase(t, adminAddr) == phase {
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("demo not %s within %v (now %s)", phase, within, demoPhase(t, adminAddr))
	return 0
}

// README's first command: with defaults the demo promotes green within
// its documented time (about half a minute; two minutes at most).
func TestDemoPromotes(t *testing.T) {
	long(t)
	adminAddr := demoProc(t)
	took := waitDemo(t, adminAddr, "promoted", 2*time.Minute)
	t.Logf("demo promoted green after %v", took.Round(time.Second))
}

func TestDemoRollsBackFailingCanary(t *testing.T) {
	long(t)
	adminAddr := demoProc(t, "--canary-errors", "0.3")
	took := waitDemo(t, adminAddr, "rolled_back", 2*time.Minute)
	t.Logf("demo rolled green back after %v", took.Round(time.Second))
}

// The CLI against a running canaryd: weight, status, healthcheck.
func TestCLIWeightAndHealthcheck(t *testing.T) {
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	adminAddr := freeAddr(t)
	c := runCanaryd(t, t.TempDir(), adminAddr, fmt.Sprintf(`  - name: web
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
`, blue, green))
	run := func(args ...string) (string, error) {
		out, err := exec.Command(binary, append(args, "--admin", adminAddr)...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("weight", "web", "blue=75", "green=25"); err != nil || !strings.Contains(out, "web: weights blue=75 green=25 (version 1)") {
		t.Errorf("weight: %v %s", err, out)
	}
	greens := 0
	for i := 0; i < 100; i++ {
		if _, pool := get(t, c.proxy+"/", nil); pool == "green" {
			greens++
		}
	}
	if greens < 23 || greens > 27 {
		t.Errorf("after weight 75/25: %d of 100 to green", greens)
	}
	if out, err := run("weight", "web", "blue=75", "green=20"); err == nil || !strings.Contains(out, "sum to 95%") {
		t.Errorf("bad weights: %v %s", err, out)
	}
	if out, err := run("status", "web"); err != nil || !strings.Contains(out, "blue        75.00% [###############.....]") || !strings.Contains(out, "green       25.00%") {
		t.Errorf("status:\n%s %v", out, err)
	}
	if out, err := run("healthcheck"); err != nil || strings.TrimSpace(out) != "ready" {
		t.Errorf("healthcheck: %v %s", err, out)
	}
	c.p.cmd.Process.Signal(syscall.SIGTERM)
	c.p.wait(t, 15*time.Second)
	if out, err := run("healthcheck"); err == nil {
		t.Errorf("healthcheck against a stopped canaryd passed: %s", out)
	}
}

// browser is a headless Chromium tab for the test, closed at its end.
func browser(t *testing.T, chromium string, within time.Duration) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1300, 1300))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, within)
	t.Cleanup(func() { cancelT(); cancel(); cancelAlloc() })
	return ctx
}

// A real browser on the dashboard of a running demo: it sees both pools
// and a drawn chart, clicks abort, and sees the rollout rolled back. The
// screenshot is kept as a test artifact.
func TestDashboardInBrowser(t *testing.T) {
	long(t)
	chromium := tool(t, "chromium", "CANARYD_REQUIRE_CHROMIUM")
	adminAddr, proxyAddr := demoProcs(t, "--interval", "2s")
	// Five previews of green: the dashboard shows them by the pool.
	for i := 0; i < 5; i++ {
		if _, pool := get(t, "http://"+proxyAddr+"/", map[string]string{"X-Canary-Pool": "green"}); pool != "green" {
			t.Fatalf("preview went to %q", pool)
		}
	}
	ctx := browser(t, chromium, 90*time.Second)

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("browser, %s: %v", what, err)
		}
	}
	// Every console error, uncaught exception and browser log error (a CSP
	// violation among them) fails the test.
	var consoleMu sync.Mutex
	var consoleErrors []string
	chromedp.Listen(ctx, func(ev any) {
		consoleMu.Lock()
		defer consoleMu.Unlock()
		switch ev := ev.(type) {
		case *cdpruntime.EventConsoleAPICalled:
			if ev.Type == cdpruntime.ConsoleAPICalledTypeError {
				consoleErrors = append(consoleErrors, fmt.Sprint("console.error ", ev.Args))
			}
		case *cdpruntime.EventExceptionThrown:
			consoleErrors = append(consoleErrors, "exception "+ev.ExceptionDetails.Text)
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				consoleErrors = append(consoleErrors, "log "+ev.Entry.Text)
			}
		}
	})
	dir := os.Getenv("CANARYD_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	screenshot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG; below it, JPEG
		if err != nil {
			t.Fatal(err)
		}
		shot, _ := filepath.Abs(filepath.Join(dir, name))
		if err := os.WriteFile(shot, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", shot)
	}
	do("open the dashboard", chromedp.Navigate("http://"+adminAddr+"/"),
		chromedp.WaitVisible(`tr[data-pool="blue"]`), chromedp.WaitVisible(`tr[data-pool="green"]`))
	// The charts fill once the window has a few seconds of snapshots; the
	// weight chart is drawn from the start.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelectorAll('svg.chart[data-chart^="requests/s"] path.line').length >= 2`)); err != nil {
		t.Fatalf("browser, charts: %v", err)
	}
	pools, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('tr[data-pool]')).map(e => e.dataset.pool)`))
	if err != nil {
		t.Fatal(err)
	}
	lines, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('svg.chart path.line').length`))
	if err != nil {
		t.Fatal(err)
	}
	// Time axes with clock labels, a weight chart, and the step strip with
	// the current step marked; the token box hidden (the demo has no
	// token); resume disabled while the rollout progresses.
	page, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]any](`({
		axes: document.querySelectorAll('svg.chart g[data-axis="time"] text').length,
		axisLabel: (document.querySelector('svg.chart g[data-axis="time"] text') || {}).textContent || "",
		weightLines: document.querySelectorAll('svg.chart[data-chart="weight %"] path.line').length,
		steps: Array.from(document.querySelectorAll('ol.steps li')).map(e => e.textContent).join(" "),
		current: (document.querySelector('ol.steps li.current') || {}).textContent || "",
		tokenHidden: document.querySelector('.token').hidden,
		resumeDisabled: document.querySelector('button[data-action="resume"]').disabled,
		abortDisabled: document.querySelector('button[data-action="abort"]').disabled,
	})`))
	if err != nil {
		t.Fatal(err)
	}
	if page["axes"].(float64) < 4*2 || !strings.Contains(fmt.Sprint(page["axisLabel"]), ":") || page["weightLines"].(float64) < 2 ||
		page["steps"] != "5% 25% 50% 100%" || page["current"] == "" || page["tokenHidden"] != true || page["resumeDisabled"] != true || page["abortDisabled"] != false {
		t.Errorf("dashboard: %v; want time axes with clock labels on the 4 charts, a weight line per pool, the step strip 5%% 25%% 50%% 100%% with a current step, no token box, resume disabled and abort enabled", page)
	}
	screenshot("dashboard-rollout.png")
	preview, err := chromedp.Run(ctx, chromedp.Text(`td[data-traffic="green"]`))
	if err != nil || !strings.Contains(preview, " 5 preview") || strings.Contains(preview, "preview (") {
		t.Errorf("the dashboard's traffic classes for green: %q (%v); want 5 preview requests, none failed", preview, err)
	}
	do("abort", chromedp.Click(`button[data-action="abort"]`), chromedp.WaitVisible(`[data-phase="web"].rolled_back`))
	phase, err := chromedp.Run(ctx, chromedp.Text(`[data-phase="web"]`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(pools, ",") != "blue,green" || lines < 2 || phase != "rolled back" {
		t.Errorf("dashboard showed pools %v, %d chart lines, phase %q", pools, lines, phase)
	}
	if demoPhase(t, adminAddr) != "rolled_back" {
		t.Error("the click did not roll the demo back")
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector('button[data-action="abort"]').disabled`)); err != nil {
		t.Errorf("abort still enabled after the rollback: %v", err)
	}
	screenshot("dashboard-rolled-back.png")
	screenshot("dashboard.png")

	// A second demo (its own ports), promoted by its button.
	admin2, _ := demoProcs(t, "--interval", "2s", "--backend-port", demoBase(t))
	do("open the second dashboard", chromedp.Navigate("http://"+admin2+"/"), chromedp.WaitVisible(`button[data-action="promote"]`))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelectorAll('svg.chart[data-chart^="requests/s"] path.line').length >= 1`)); err != nil {
		t.Fatalf("browser, second dashboard charts: %v", err)
	}
	do("promote", chromedp.Click(`button[data-action="promote"]`), chromedp.WaitVisible(`[data-phase="web"].promoted`))
	screenshot("dashboard-promoted.png")
	consoleMu.Lock()
	defer consoleMu.Unlock()
	if len(consoleErrors) > 0 {
		t.Errorf("browser console errors: %v", consoleErrors)
	}

}
