package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"canaryd/rollout"
)

// nginxServer starts nginx on a loopback port (one process, no daemon, no
// user switch), serving a directory with one index.html that says name.
func nginxServer(t *testing.T, name string) string { return nginxServerWith(t, name, nil) }

// nginxServerWith is nginxServer also serving files (name → content).
func nginxServerWith(t *testing.T, name string, files map[string][]byte) string {
	t.Helper()
	bin := tool(t, "nginx", "CANARYD_REQUIRE_NGINX", "/usr/sbin/nginx")
	dir := t.TempDir()
	www := site(t, filepath.Join(dir, "www"), name)
	for f, data := range files {
		if err := os.WriteFile(filepath.Join(www, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	addr := freeAddr(t)
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_rlimit_nofile 8192;
pid %[1]s/nginx.pid;
error_log stderr crit;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server { listen %[2]s; root %[1]s/www; }
}
`, dir, addr)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return serveUntilDone(t, exec.Command(bin, "-p", dir, "-c", cf, "-e", "stderr"), addr)
}

// An identical build on servers nobody here wrote is promoted, not rolled
// back: two stable instances and one canary of the same server with the
// same content, 50 requests a second, while another process keeps a core
// busy, judged by the getting-started analysis (error and p99 bounds, and
// compare_to_stable). Python's http.server and nginx. `scripts/identical-builds.sh`
// runs it ten times each; CI runs it once each.
func TestIdenticalBuildIsPromoted(t *testing.T) {
	long(t)
	for _, server := range []struct {
		name  string
		start func(*testing.T, string) string
	}{{"python http.server", pythonServer}, {"nginx", nginxServer}} {
		t.Run(server.name, func(t *testing.T) {
			a, b, c := server.start(t, "shop"), server.start(t, "shop"), server.start(t, "shop")
			busy := exec.Command("sh", "-c", "while :; do :; done") // the CPU load of another process
			if err := busy.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { busy.Process.Kill(); busy.Wait() })
			run := runCanaryd(t, t.TempDir(), freeAddr(t), fmt.Sprintf(`  - name: shop
    health:
      active: { path: /, interval: 2s }
    pools:
      - { name: v1, weight: 100, instances: [%q, %q] }
      - { name: v2, weight: 0, instances: [%q] }
    rollout:
      stable: v1
      canary: v2
      steps: [25, 50, 100]
      interval: 2s
      min_requests: 100
      analysis: { max_error_rate: 0.02, max_latency_p99: 500ms, compare_to_stable: {} }
`, a, b, c))
			load := start(t, "load", "--url", run.proxy+"/", "--rate", "50", "--every", "10s")
			defer load.cmd.Process.Kill()
			began := time.Now()
			var st rollout.Status
			for end := time.Now().Add(3 * time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
				if st = run.status(t, "shop"); st.Phase == rollout.Promoted || st.Phase == rollout.RolledBack || st.Phase == rollout.Paused {
					break
				}
			}
			t.Logf("%s: %s after %v (%d failed analyses): %s", server.name, st.Phase, time.Since(began).Round(time.Second), st.Failures, st.Reason)
			if st.Phase != rollout.Promoted {
				for _, v := range st.LastVerdicts {
					t.Logf("  %s %s: %s", v.Result, v.Check, v.Reason)
				}
				t.Fatalf("an identical build was %s, not promoted", st.Phase)
			}
		})
	}
}
