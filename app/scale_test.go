package app

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"canaryd/config"
	"canaryd/metrics"
)

// manyRoutesConfig is n host routes of two pools (4 + 1 instances).
func manyRoutesConfig(n int, state string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: \"127.0.0.1:0\"\nadmin: { listen: off }\nstate_dir: %q\nroutes:\n", state)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - name: r%d\n    match: { host: svc-%d.example }\n    pools:\n      - { name: blue, weight: 90, instances: [\"127.1.%d.%d:9000\", \"127.2.%d.%d:9000\", \"127.3.%d.%d:9000\", \"127.4.%d.%d:9000\"] }\n      - { name: green, weight: 10, instances: [\"127.5.%d.%d:9000\"] }\n",
			i, i, i/250, i%250, i/250, i%250, i/250, i%250, i/250, i%250, i/250, i%250)
	}
	return b.String()
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// 100 full reloads of a 500-route config (each a new file content, so
// each is parsed, validated and applied) leave the live heap where it was:
// no leak in the tables, windows, mirrors, health records or metrics.
func TestReloadsDoNotLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("100 reloads of a 500-route config")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	body := manyRoutesConfig(500, filepath.Join(dir, "state"))
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(path, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, Options{ConfigPath: path, ConfigData: []byte(body), Registry: metrics.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	reload := func(i int) {
		if err := os.WriteFile(path, []byte(body+fmt.Sprintf("# %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
		if res := s.reloadOnce("test"); res.Result != metrics.ReloadApplied {
			t.Fatalf("reload %d: %s %v", i, res.Result, res.Err)
		}
	}
	for i := 0; i < 10; i++ { // warm up: metric children, caches
		reload(i)
	}
	before := liveHeap()
	for i := 10; i < 110; i++ {
		reload(i)
	}
	after := liveHeap()
	t.Logf("live heap %.1f MiB before, %.1f MiB after 100 reloads", float64(before)/(1<<20), float64(after)/(1<<20))
	if float64(after) > 1.1*float64(before)+(2<<20) {
		t.Errorf("the live heap grew from %d to %d bytes over 100 reloads", before, after)
	}
	s.closeMirrors()
	s.checker.Close()
	s.rollouts.Close()
}
