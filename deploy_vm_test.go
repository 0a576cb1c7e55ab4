package canaryd_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"canaryd/internal/etcdtest"
	"canaryd/internal/freeport"
)

// The VM recipe of docs/cluster.md ("On three VMs"), run as written on
// loopback: its three etcd env files start three etcd members, its one
// canaryd.yaml three members, its haproxy.cfg a real HAProxy in front;
// only the addresses move (192.0.2.1N, the documentation range, to
// 127.0.0.N with free ports) and the data and state directories (to
// temporary ones). Requests through HAProxy are served, the members agree
// on a leader, and a member stopped with SIGTERM costs no request. Its two
// systemd units pass systemd-analyze verify.
func TestVMClusterRecipe(t *testing.T) {
	if testing.Short() {
		t.Skip("long test; runs without -short")
	}
	dir := "examples/vm-cluster"
	etcd := etcdtest.Binary(t)
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CANARYD_REQUIRE_HAPROXY") != "" {
			t.Fatal("haproxy is not installed; run ./scripts/test.sh, which installs it")
		}
		t.Skip("haproxy not installed (./scripts/test.sh installs it)")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "canaryd")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/canaryd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	verifyUnits(t, dir, map[string]string{"/usr/bin/etcd": etcd, "/usr/local/bin/canaryd": bin})

	// Every address of the recipe, moved to loopback.
	moved := map[string]string{}
	for n := 1; n <= 3; n++ {
		for _, port := range []string{"2379", "2380", "8080"} {
			moved[fmt.Sprintf("192.0.2.1%d:%s", n, port)] = freeAt(t, fmt.Sprintf("127.0.0.%d", n))
		}
	}
	for i, pool := range []string{"blue", "green"} {
		addr := freeAt(t, "127.0.0.4")
		moved[fmt.Sprintf("192.0.2.2%d:9001", i+1)] = addr
		startProc(t, bin, nil, "backend", "--listen", addr, "--pool", pool)
	}
	move := func(s string) string {
		return regexp.MustCompile(`192\.0\.2\.\d+:\d+`).ReplaceAllStringFunc(s, func(a string) string {
			if m, ok := moved[a]; ok {
				return m
			}
			t.Fatalf("the recipe names %s, which this test does not move", a)
			return a
		})
	}

	// Three etcd members, from the env files.
	for n := 1; n <= 3; n++ {
		var env []string
		sc := bufio.NewScanner(bytes.NewReader(mustReadFile(t, filepath.Join(dir, fmt.Sprintf("etcd-%d.env", n)))))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if strings.HasPrefix(line, "ETCD_DATA_DIR=") {
				line = "ETCD_DATA_DIR=" + filepath.Join(tmp, fmt.Sprintf("etcd-%d", n))
			}
			env = append(env, move(line))
		}
		startProc(t, etcd, append(env, "ETCD_LOG_LEVEL=warn"))
	}

	// Three canaryd members, from the one config: each its own listener,
	// admin and state directory (the same host here, three VMs there).
	cfg := string(mustReadFile(t, filepath.Join(dir, "canaryd.yaml")))
	var admins []string
	var members []*exec.Cmd
	for n := 1; n <= 3; n++ {
		admin := freeAt(t, fmt.Sprintf("127.0.0.%d", n))
		admins = append(admins, admin)
		c := strings.Replace(cfg, `listen: ":8080"`, fmt.Sprintf("listen: %q", moved[fmt.Sprintf("192.0.2.1%d:8080", n)]), 1)
		c = strings.Replace(c, `listen: "127.0.0.1:9901"`, fmt.Sprintf("listen: %q", admin), 1)
		c = strings.Replace(c, "state_dir: /var/lib/canaryd", "state_dir: "+filepath.Join(tmp, fmt.Sprintf("state-%d", n)), 1)
		path := filepath.Join(tmp, fmt.Sprintf("canaryd-%d.yaml", n))
		if err := os.WriteFile(path, []byte(move(c)), 0o644); err != nil {
			t.Fatal(err)
		}
		members = append(members, startProc(t, bin, nil, "run", "--config", path))
	}

	// HAProxy, from its config.
	front := freeAt(t, "127.0.0.1")
	hcfg := strings.Replace(string(mustReadFile(t, filepath.Join(dir, "haproxy.cfg"))), "bind :80", "bind "+front, 1)
	hpath := filepath.Join(tmp, "haproxy.cfg")
	if err := os.WriteFile(hpath, []byte(move(hcfg)), 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, haproxy, nil, "-db", "-f", hpath)

	// Served through HAProxy, and one cluster with a leader.
	client := &http.Client{Timeout: 5 * time.Second}
	served := func() bool {
		resp, err := client.Get("http://" + front + "/")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// blue, or green once the rollout's first step gives it 5%
		return resp.StatusCode == 200 && bytes.Contains(body, []byte(`"pool":"`))
	}
	waitUntil(t, 30*time.Second, "requests through HAProxy served", served)
	waitUntil(t, 30*time.Second, "three members and a leader", func() bool {
		var v struct {
			Leader  string `json:"leader"`
			Members []any  `json:"members"`
		}
		resp, err := client.Get("http://" + admins[1] + "/api/v1/cluster")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&v) == nil && v.Leader != "" && len(v.Members) == 3
	})

	// A member stopped as systemd stops it costs no request: it drains,
	// and HAProxy sends new connections to the others.
	ctx, cancel := context.WithCancel(context.Background())
	var total, failed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			total.Add(1)
			if !served() {
				failed.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	members[0].Process.Signal(syscall.SIGTERM)
	time.Sleep(4 * time.Second) // past HAProxy's check (2 × 1s) and the drain
	cancel()
	<-done
	t.Logf("SIGTERM of a member under load: %d of %d requests through HAProxy failed", failed.Load(), total.Load())
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed while a member stopped", failed.Load(), total.Load())
	}
}

// verifyUnits runs systemd-analyze verify on the recipe's units, with
// the binaries they name where they are on this machine.
func verifyUnits(t *testing.T, dir string, binaries map[string]string) {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: units not verified")
		return
	}
	units, _ := filepath.Glob(filepath.Join(dir, "*.service"))
	if len(units) != 2 {
		t.Fatalf("%d units in %s, want the etcd member's and canaryd's", len(units), dir)
	}
	for _, u := range units {
		unit := string(mustReadFile(t, u))
		for from, to := range binaries {
			unit = strings.ReplaceAll(unit, from, to)
		}
		unit = strings.Replace(unit, "EnvironmentFile=/etc/canaryd/etcd.env", "EnvironmentFile=-/etc/canaryd/etcd.env", 1)
		path := filepath.Join(t.TempDir(), filepath.Base(u))
		if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd := exec.Command(analyze, "verify", path)
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, stderr.String())
		}
	}
}

// freeAt is a free port on a loopback address.
func freeAt(t *testing.T, ip string) string {
	t.Helper()
	return freeport.On(t, ip)
}

// startProc runs a program until the test ends; its output is shown when
// the test fails.
func startProc(t *testing.T, bin string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s %s:\n%s", filepath.Base(bin), strings.Join(args, " "), out.String())
		}
	})
	return cmd
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within %v", what, within)
}

// lockedBuffer collects a process's output from its two streams.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
