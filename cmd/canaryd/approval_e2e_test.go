package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"canaryd/rollout"

	"github.com/chromedp/chromedp"
)

// Approval gates answered three ways on the built binary: the CLI, the
// API, and the dashboard's button in Chromium. Each approval's who,
// source and why are in the history, and status --wait counts a rollout
// that waits for one as undecided (exit 3).
func TestApprovalsEndToEnd(t *testing.T) {
	long(t)
	chromium := tool(t, "chromium", "CANARYD_REQUIRE_CHROMIUM")
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	c := runCanaryd(t, t.TempDir(), freeAddr(t), webRoute(blue, green, `{ steps: [20, 50, 100], interval: 300ms, min_requests: 20,
       gates: [ { name: qa, kind: approval, at: step }, { name: sign-off, kind: approval, at: pre_promotion } ] }`))
	g := startLoad(c.proxy+"/", 2, nil)
	defer g.halt()
	waitPending := func(gate string, weight float64) {
		t.Helper()
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			st := c.status(t, "web")
			if st.Gate != nil && strings.Join(st.Gate.Pending, ",") == gate && st.CanaryWeight == weight {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("never waiting for %s at %v%%: %s at %v%%: %s", gate, weight, st.Phase, st.CanaryWeight, st.Reason)
			}
		}
	}

	waitPending("qa", 20)
	if out, errOut, code := waitCLI(t, 30*time.Second, "web", "--wait", "--timeout", "1s", "--admin", c.admin); code != 3 {
		t.Errorf("status --wait while an approval is pending: exit %d, %q %q; want 3", code, out, errOut)
	}
	text, _ := exec.Command(binary, "status", "web", "--admin", c.admin).CombinedOutput()
	if !strings.Contains(string(text), "waiting for the approval of qa: `canaryd approve web`") {
		t.Errorf("canaryd status does not say how to approve:\n%s", text)
	}
	out, err := exec.Command(binary, "approve", "web", "--by", "alice", "--reason", "QA passed", "--admin", c.admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "web: approved; progressing, step 2, canary 50.00%") {
		t.Fatalf("canaryd approve: %v: %s", err, out)
	}
	waitPending("qa", 50)
	body, _ := json.Marshal(map[string]string{"gate": "qa", "by": "bob", "reason": "load test fine"})
	resp, err := http.Post("http://"+c.admin+"/api/v1/routes/web/approve", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST approve: %s", resp.Status)
	}

	waitPending("sign-off", 50)
	ctx := browser(t, chromium, 90*time.Second)
	// Waits poll with their own timeout, so that a failure still has a
	// tab to show the page from.
	poll := func(what, js string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			dump, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("routes").innerHTML`))
			t.Fatalf("browser, %s: %v\n%s", what, err, dump)
		}
	}
	do := func(what string, a chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, a); err != nil {
			t.Fatalf("browser, %s: %v", what, err)
		}
	}
	do("open the dashboard", chromedp.Navigate("http://"+c.admin+"/"))
	poll("see the approve button", `!!document.querySelector('button[data-action="approve"][data-gate="sign-off"]')`)
	do("type who", chromedp.SendKeys(`input.approve-by`, "carol"))
	do("type why", chromedp.SendKeys(`input.approve-reason`, "release notes out"))
	do("click approve", chromedp.Click(`button[data-action="approve"][data-gate="sign-off"]`))
	poll("see it promoted", `!!document.querySelector('[data-phase="web"].promoted')`)

	st := c.status(t, "web")
	var got []string
	for _, e := range st.History {
		if a := e.Approval; a != nil {
			got = append(got, a.Gate+" by "+a.By+" ("+a.Source+"): "+a.Reason)
		}
	}
	want := []string{"qa by alice (cli): QA passed", "qa by bob (api): load test fine", "sign-off by carol (dashboard): release notes out"}
	if st.Phase != rollout.Promoted || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s; approvals in the history:\n%s\nwant:\n%s", st.Phase, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Promoted, it waits for nothing: an approval is refused, exit 1.
	if out, err := exec.Command(binary, "approve", "web", "--admin", c.admin).CombinedOutput(); err == nil || !strings.Contains(string(out), "route web is promoted, not waiting for an approval") {
		t.Errorf("an approval nobody waits for: %v: %s", err, out)
	}
}
