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

// Section 6 of the guide, as written: the pools of section 3's config
// replaced by the registered ones, then the guide's commands, each
// saying what the guide says it does.
func TestGettingStartedRegistrations(t *testing.T) {
	doc, err := os.ReadFile("../../docs/getting-started.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(doc), "```yaml\n")
	cfg, _, _ := strings.Cut(rest, "```")
	_, sec6, ok := strings.Cut(string(doc), "## 6. Instances that register themselves")
	if !ok {
		t.Fatal("no section 6 in docs/getting-started.md")
	}
	_, rest, _ = strings.Cut(sec6, "```yaml\n")
	pools, rest, _ := strings.Cut(rest, "```")
	var cmds []string
	for {
		var block string
		var found bool
		if _, rest, found = strings.Cut(rest, "```sh\n"); !found {
			break
		}
		block, rest, _ = strings.Cut(rest, "```")
		for _, line := range strings.Split(block, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				cmds = append(cmds, line)
			}
		}
	}
	if len(cmds) != 4 {
		t.Fatalf("section 6 has %d commands; this test knows 4: %q", len(cmds), cmds)
	}
	start := strings.Index(cfg, "    pools:\n")
	end := strings.Index(cfg, "    force:")
	cfg = cfg[:start] + pools + cfg[end:]
	dir := t.TempDir()
	repl := []string{"./shop-state", filepath.Join(dir, "state")}
	for _, port := range []string{"8001", "8002", "8101"} {
		addr := backendProc(t, map[string]string{"8001": "v1", "8002": "v1", "8101": "v2"}[port])
		repl = append(repl, "127.0.0.1:"+port, addr)
	}
	admin := freeAddr(t)
	repl = append(repl, "127.0.0.1:8080", freeAddr(t), "127.0.0.1:9901", admin)
	r := strings.NewReplacer(repl...)
	path := filepath.Join(dir, "shop.yaml")
	if err := os.WriteFile(path, []byte(r.Replace(cfg)), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startCanaryd(t, path)
	run := func(line string) string {
		t.Helper()
		line, comment, _ := strings.Cut(line, "#")
		args := append(strings.Fields(r.Replace(line))[1:], "--admin", admin)
		out, err := exec.Command(binary, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		return comment + "\n" + string(out)
	}
	run(cmds[0])
	if out := run(cmds[1]); !strings.Contains(out, "idle") || !strings.Contains(out, "waiting for a release: the canary pool v2 has no instances yet") {
		t.Errorf("after registering v1 the guide says idle, waiting; status says:%s", out)
	}
	run(cmds[2])
	st := c.waitPhase(t, "shop", rollout.Progressing, 10*time.Second)
	if st.CanaryWeight != 10 || st.CanaryVersion != "v2" {
		t.Errorf("after v2 registered: %+v", st)
	}
	if out := run(cmds[3]); !strings.Contains(out, "rollout canary v1 (v1) → v2 (v2): progressing, step 1 of 3") {
		t.Errorf("the guide says progressing, step 1: v1 (v1) → v2 (v2); status says:%s", out)
	}
}
