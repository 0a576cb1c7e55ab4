package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// A step that holds to gather evidence says how far it is from a
// decision, on the built binary: in the API, in canaryd status, and on
// the dashboard in Chromium.
func TestHoldingStepEstimateEndToEnd(t *testing.T) {
	long(t)
	chromium := tool(t, "chromium", "CANARYD_REQUIRE_CHROMIUM")
	// A sample gate far above what the test sends: the step holds,
	// gathering, for as long as the test looks, with an estimate from the
	// requests still missing (the interval checks' own estimates are
	// table-tested in package rollout).
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green, `{ steps: [50, 100], interval: 500ms, min_requests: 10000000,
       analysis: { max_error_rate: 0.05 } }`))
	g := startLoad(c.proxy+"/", 2, nil)
	defer g.halt()
	var text string
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st := c.status(t, "web")
		if st.Estimate != nil && st.Estimate.Requests > 0 && st.Estimate.Seconds > 0 {
			text = st.Estimate.Text
			break
		}
		if time.Now().After(end) {
			t.Fatalf("no estimate: %s: %s", st.Phase, st.Reason)
		}
	}
	if !strings.HasPrefix(text, "about ") || !strings.Contains(text, " more canary requests, ~") {
		t.Errorf("estimate %q", text)
	}
	out, _ := exec.Command(binary, "status", "web", "--admin", c.admin).CombinedOutput()
	if !strings.Contains(string(out), "until a decision: about ") {
		t.Errorf("canaryd status:\n%s", out)
	}
	ctx := browser(t, chromium, 60*time.Second)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+c.admin+"/")); err != nil {
		t.Fatalf("browser: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`!!document.querySelector("p.estimate")`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("browser: no estimate on the dashboard: %v", err)
	}
	got, err := chromedp.Run(ctx, chromedp.Text(`p.estimate`))
	if err != nil || !strings.HasPrefix(got, "until a decision: about ") {
		t.Errorf("dashboard: %q (%v)", got, err)
	}
}
