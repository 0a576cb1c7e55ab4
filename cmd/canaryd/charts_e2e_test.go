package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The dashboard's charts tell the truth about a short run, in a real
// browser at 10 s and 60 s of a demo (screenshots kept): the time axis
// starts where the process did (nothing drawn from before it existed) and
// spans at least 30 s; its labels never overlap; the error-rate axis has
// three different labels with their unit even when every value is 0; the
// request rate is a 10 s average, its window named in its title; and
// after an abort, the canary's "now" says 0 or draining, not a rate it no
// longer gets.
func TestDashboardChartsTellTheTruth(t *testing.T) {
	long(t)
	chromium := tool(t, "chromium", "CANARYD_REQUIRE_CHROMIUM")
	started := time.Now()
	adminAddr, _ := demoProcs(t, "--interval", "1h", "--backend-port", demoBase(t))
	ctx := browser(t, chromium, 150*time.Second)
	dir := os.Getenv("CANARYD_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+adminAddr+"/"), chromedp.WaitVisible(`tr[data-pool="green"]`)); err != nil {
		t.Fatal(err)
	}
	// What the page draws, read in the browser.
	const measure = `(() => {
	  const charts = Array.from(document.querySelectorAll('svg.chart'));
	  const overlaps = [];
	  for (const c of charts) {
	    const boxes = Array.from(c.querySelectorAll('g[data-axis="time"] text')).map(e => e.getBBox());
	    for (let i = 1; i < boxes.length; i++) if (boxes[i].x < boxes[i-1].x + boxes[i-1].width) overlaps.push(c.dataset.chart);
	  }
	  const err = document.querySelector('svg.chart[data-chart="error rate"]');
	  const rate = document.querySelector('svg.chart[data-chart^="requests/s"]');
	  return {
	    from: Math.min(...charts.map(c => Number(c.dataset.from))),
	    to: Math.max(...charts.map(c => Number(c.dataset.to))),
	    overlaps,
	    errorLabels: Array.from(err.querySelectorAll('text.axis.y')).map(e => e.textContent),
	    rateTitle: rate.dataset.chart,
	    labels: charts.map(c => c.querySelectorAll('g[data-axis="time"] text').length),
	  };
	})()`
	check := func(at time.Duration) map[string]any {
		t.Helper()
		time.Sleep(time.Until(started.Add(at)))
		var page map[string]any
		var err error
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			page, err = chromedp.Run(ctx, chromedp.Evaluate[map[string]any](measure))
			if err == nil {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("at %v: %v", at, err)
			}
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		shot, _ := filepath.Abs(filepath.Join(dir, fmt.Sprintf("dashboard-%ds.png", int(at.Seconds()))))
		if err := os.WriteFile(shot, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("at %v: %v; screenshot %s", at, page, shot)
		from, to := time.UnixMilli(int64(page["from"].(float64))), time.UnixMilli(int64(page["to"].(float64)))
		if to.Sub(from) < 29*time.Second {
			t.Errorf("at %v: the charts span %v, want at least 30 s", at, to.Sub(from))
		}
		if at > 35*time.Second && from.Before(started.Add(-time.Second)) {
			t.Errorf("at %v: the charts start %v before the process did", at, started.Sub(from))
		}
		if o := page["overlaps"].([]any); len(o) > 0 {
			t.Errorf("at %v: x labels overlap on %v", at, o)
		}
		l := page["errorLabels"].([]any)
		if len(l) != 3 || l[0] == l[1] || l[1] == l[2] || l[0] != "0%" {
			t.Errorf("at %v: error-rate axis labels %v, want three different ones from 0%%", at, l)
		}
		if page["rateTitle"] != "requests/s (10 s average)" {
			t.Errorf("at %v: the rate chart is %q, want its averaging window named", at, page["rateTitle"])
		}
		return page
	}
	check(10 * time.Second)
	check(60 * time.Second)
	// Abort: green's weight goes to 0, and its "now" says so.
	if err := chromedp.Do(ctx, chromedp.Click(`button[data-action="abort"]`), chromedp.WaitVisible(`[data-phase="web"].rolled_back`)); err != nil {
		t.Fatal(err)
	}
	var now string
	var err error
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		if now, err = chromedp.Run(ctx, chromedp.Text(`td[data-rate="green"]`)); err == nil && (now == "0 req/s" || len(now) > 8 && now[:8] == "draining") {
			return
		}
	}
	t.Errorf("after the abort green's now column says %q, want 0 req/s or draining", now)
}
