package main

import (
	"strings"
	"testing"
	"time"

	"canaryd/rollout"

	"github.com/chromedp/chromedp"
)

// The built binary bakes a promoted canary and reverts it when it starts
// failing after 100%: status --wait waits through the bake and exits 1,
// and stable, kept configured, serves everything again.
func TestBakeRevertsACanaryThatFailsAfterPromotion(t *testing.T) {
	long(t)
	blue, green := backendProc(t, "blue"), backendProc(t, "green", "--fail-path", "/checkout")
	c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green, `{ steps: [50, 100], interval: 500ms, min_requests: 40,
       analysis: { max_error_rate: 0.05 }, tripwire: { disabled: true }, bake: { duration: 1m } }`))
	g := startLoad(c.proxy+"/", 3, nil)
	defer g.halt()
	c.waitPhase(t, "web", rollout.Baking, 30*time.Second)
	st := c.status(t, "web")
	if st.CanaryWeight != 100 || st.BakeUntil.IsZero() {
		t.Fatalf("baking: %v%%, until %v", st.CanaryWeight, st.BakeUntil)
	}
	// The dashboard says it bakes, and until when.
	ctx := browser(t, tool(t, "chromium", "CANARYD_REQUIRE_CHROMIUM"), 60*time.Second)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+c.admin+"/")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`/^baking at 100% until .+; blue stays configured/.test((document.querySelector("p.bake") || {}).textContent || "")`,
		chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Errorf("the dashboard does not show the bake: %v", err)
	}
	// Baking is not promoted yet: --wait waits on.
	if _, _, code := waitCLI(t, 30*time.Second, "web", "--wait", "--timeout", "1s", "--admin", c.admin); code != 3 {
		t.Errorf("status --wait during the bake: exit %d; want 3 (undecided)", code)
	}
	// After 100%, the canary starts failing: checkouts (a quarter of the
	// traffic) answer 500.
	bad := startLoad(c.proxy+"/checkout", 1, nil)
	defer bad.halt()
	out, code := waitOutcome(t, c.admin, "web")
	if code != 1 || !strings.Contains(out, "web: rolled_back") {
		t.Fatalf("status --wait: exit %d; want 1:\n%s", code, out)
	}
	st = c.status(t, "web")
	if !strings.Contains(st.Reason, "the bake failed, back to blue: error_rate") {
		t.Errorf("reason: %s", st.Reason)
	}
	before := g.pools()["blue"]
	time.Sleep(500 * time.Millisecond)
	if after := g.pools()["blue"]; after <= before {
		t.Errorf("blue served %d requests, then %d: not serving again after the revert", before, after)
	}
}
