package app

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/metrics"
)

// includeRoute is one route of an included file, on its own path prefix.
func includeRoute(name string, green int, blue, greenURL string) string {
	return fmt.Sprintf(`  - name: %s
    match: { path_prefix: /%s }
    pools:
      - { name: blue, weight: %d, instances: [%q] }
      - { name: green, weight: %d, instances: [%q] }
`, name, name, 100-green, blue, green, greenURL)
}

// A config split across included files, served and reloaded: an edit of
// one file applies its routes; a bad file keeps its last good version
// while another file's edit applies, and its metric names it; a new
// file's routes are served; a clash of names is refused naming both
// places. Every change arrives by the file watch.
func TestIncludedFilesReloadOneByOne(t *testing.T) {
	blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
	dir := t.TempDir()
	rd := filepath.Join(dir, "routes.d")
	if err := os.MkdirAll(rd, 0o755); err != nil {
		t.Fatal(err)
	}
	a, b := filepath.Join(rd, "a.yaml"), filepath.Join(rd, "b.yaml")
	writeFile(t, a, "routes:\n"+includeRoute("a", 0, blue.URL, green.URL))
	writeFile(t, b, "routes:\n"+includeRoute("b", 0, blue.URL, green.URL))
	main := filepath.Join(dir, "config.yaml")
	writeFile(t, main, `listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
include: ["routes.d/*.yaml"]
`)
	set, u, err := config.LoadSet(main)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, path: main, reg: metrics.NewRegistry(), results: make(chan ReloadResult, 1000)}
	r.srv, err = New(u.Config, Options{ConfigPath: main, ConfigData: u.MainData, ConfigSet: set, Registry: r.reg,
		OnReload: func(res ReloadResult) { r.results <- res }})
	if err != nil {
		t.Fatal(err)
	}
	serveFor(t, r.srv)
	r.client = &http.Client{Timeout: 5 * time.Second}
	r.proxy = "http://" + r.srv.ProxyAddr().String()
	pool := func(route string) string {
		t.Helper()
		resp, err := r.client.Get(r.proxy + "/" + route)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Backend")
	}
	fileOK := func(path string) float64 {
		return metricValue(t, r.reg, "canaryd_config_file_last_reload_successful", fmt.Sprintf("file=%q", path))
	}
	if pool("a") != "blue" || pool("b") != "blue" {
		t.Fatal("not serving the included routes")
	}

	writeFile(t, a, "routes:\n"+includeRoute("a", 100, blue.URL, green.URL))
	r.next(metrics.ReloadApplied, 5*time.Second)
	if pool("a") != "green" || pool("b") != "blue" {
		t.Fatal("a's edit not applied, or b moved")
	}

	// b broken while a is edited back: a applies, b keeps serving as it was.
	writeFile(t, b, "routes:\n"+strings.Replace(includeRoute("b", 100, blue.URL, green.URL), "weight: 0,", "weight: 5,", 1))
	res := r.next(metrics.ReloadFailed, 5*time.Second)
	if res.Err == nil || !strings.Contains(res.Err.Error(), b) || !strings.Contains(res.Err.Error(), "line 4") {
		t.Fatalf("failure %v; want it to name %s and the line", res.Err, b)
	}
	if fileOK(b) != 0 || fileOK(a) != 1 || fileOK(main) != 1 {
		t.Errorf("file gauges: a %v b %v main %v", fileOK(a), fileOK(b), fileOK(main))
	}
	if pool("b") != "blue" {
		t.Fatal("the broken file's route changed")
	}
	writeFile(t, a, "routes:\n"+includeRoute("a", 0, blue.URL, green.URL))
	r.next(metrics.ReloadFailed, 5*time.Second) // b is still broken: the reload says so, and applies a
	if pool("a") != "blue" {
		t.Fatal("a's edit was held back by b's failure")
	}
	writeFile(t, b, "routes:\n"+includeRoute("b", 100, blue.URL, green.URL))
	r.next(metrics.ReloadApplied, 5*time.Second)
	if pool("b") != "green" || fileOK(b) != 1 {
		t.Fatalf("b fixed: pool %s, gauge %v", pool("b"), fileOK(b))
	}

	// A new file: its routes are served. A clash: refused, both named.
	c := filepath.Join(rd, "c.yaml")
	writeFile(t, c, "routes:\n"+includeRoute("c", 100, blue.URL, green.URL))
	r.next(metrics.ReloadApplied, 5*time.Second)
	if pool("c") != "green" {
		t.Fatal("the new file's route is not served")
	}
	writeFile(t, filepath.Join(rd, "d.yaml"), "routes:\n"+strings.Replace(includeRoute("a", 100, blue.URL, green.URL), "path_prefix: /a", "path_prefix: /d", 1))
	res = r.next(metrics.ReloadFailed, 5*time.Second)
	if res.Err == nil || !strings.Contains(res.Err.Error(), `route "a" is already defined in `+a+":2") {
		t.Fatalf("clash: %v", res.Err)
	}
	if pool("a") != "blue" {
		t.Fatal("the clashing file changed route a")
	}
	// The refused file removed: nothing it had was applied.
	os.Remove(filepath.Join(rd, "d.yaml"))
	r.next(metrics.ReloadUnchanged, 5*time.Second)
	mfs, _ := r.reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.HasSuffix(l.GetValue(), "d.yaml") {
					t.Errorf("the removed file still has a series: %s", mf.GetName())
				}
			}
		}
	}
	// Removing a file removes its routes.
	os.Remove(c)
	r.next(metrics.ReloadApplied, 5*time.Second)
	resp, err := r.client.Get(r.proxy + "/c")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a removed file's route answers %d", resp.StatusCode)
	}
}
