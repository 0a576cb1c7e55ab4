package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"canaryd/rollout"
)

// docs/getting-started.md works as written: its config (with free ports in
// place of its own) validates, serves v1, previews v2 by header, starts the
// rollout at 10%, and canaryd status shows it.
func TestGettingStarted(t *testing.T) {
	doc, err := os.ReadFile("../../docs/getting-started.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(doc), "```yaml\n")
	cfg, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("no yaml block in docs/getting-started.md")
	}
	dir := t.TempDir()
	repl := []string{"./shop-state", filepath.Join(dir, "state")}
	for _, port := range []string{"8001", "8002", "8101"} {
		addr := backendProc(t, map[string]string{"8001": "v1", "8002": "v1", "8101": "v2"}[port])
		repl = append(repl, "127.0.0.1:"+port, addr)
	}
	repl = append(repl, "127.0.0.1:8080", freeAddr(t), "127.0.0.1:9901", freeAddr(t))
	cfg = strings.NewReplacer(repl...).Replace(cfg)
	path := filepath.Join(dir, "shop.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(binary, "validate", path).CombinedOutput(); err != nil || !strings.Contains(string(out), "ok (1 routes, 2 pools, 3 instances") {
		t.Fatalf("canaryd validate shop.yaml: %v %s", err, out)
	}
	c := startCanaryd(t, path)
	st := c.waitPhase(t, "shop", rollout.Progressing, 10*time.Second)
	if st.CanaryWeight != 10 {
		t.Errorf("the rollout starts at %.0f%%, the guide says 10%%", st.CanaryWeight)
	}
	if code, pool := get(t, c.proxy+"/", map[string]string{"X-Canary-Pool": "v2"}); code != 200 || pool != "v2" {
		t.Errorf("preview of v2: %d from %q", code, pool)
	}
	v2 := 0
	for i := 0; i < 100; i++ {
		if code, pool := get(t, c.proxy+"/", nil); code != 200 {
			t.Fatalf("request %d: %d", i, code)
		} else if pool == "v2" {
			v2++
		}
	}
	if v2 < 8 || v2 > 12 {
		t.Errorf("%d of 100 requests went to v2 at the 10%% step", v2)
	}
	if out, err := exec.Command(binary, "status", "shop", "--admin", c.admin).CombinedOutput(); err != nil || !strings.Contains(string(out), "rollout canary v1 → v2: progressing, step 1 of 3") {
		t.Errorf("canaryd status shop: %v\n%s", err, out)
	}
}
