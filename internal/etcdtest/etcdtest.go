// Package etcdtest runs a real etcd cluster (Debian's etcd-server) on
// loopback ports for tests: members can be stopped and started again.
package etcdtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"canaryd/internal/proctest"
)

// Cluster is a running etcd cluster.
type Cluster struct {
	t       *testing.T
	Members []*Member
}

// Member is one etcd process.
type Member struct {
	Name       string
	ClientAddr string // host:port
	PeerAddr   string
	dir        string
	initial    string
	mu         sync.Mutex
	proc       *proctest.Proc // nil while stopped
	out        *bytes.Buffer
}

// Binary finds etcd, or skips the test (fails it when
// CANARYD_REQUIRE_ETCD is set, as scripts/test.sh does).
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("CANARYD_REQUIRE_ETCD") != "" {
			t.Fatal("etcd is not installed; run ./scripts/test.sh, which installs Debian's etcd-server")
		}
		t.Skip("etcd not installed (./scripts/test.sh installs Debian's etcd-server)")
	}
	return bin
}

// freePorts returns n distinct free loopback addresses. Every listener
// stays open until all n are chosen: the kernel hands a port it has just
// seen closed out again, and two members given one URL make etcd refuse
// the whole cluster ("has duplicate url").
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	out := make([]string, 0, n)
	for len(out) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		out = append(out, l.Addr().String())
	}
	return out
}

// Start runs an n-member cluster and waits until it answers. Its data
// lives in memory (/dev/shm when there is one): etcd's fsyncs are what
// make it slow on a test machine.
func Start(t *testing.T, n int) *Cluster {
	t.Helper()
	Binary(t)
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	root, err := os.MkdirTemp(base, "canaryd-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	c := &Cluster{t: t}
	var initial []string
	ports := freePorts(t, 2*n)
	for i := 0; i < n; i++ {
		m := &Member{Name: fmt.Sprintf("e%d", i), ClientAddr: ports[2*i], PeerAddr: ports[2*i+1], dir: filepath.Join(root, fmt.Sprintf("e%d", i))}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"=http://"+m.PeerAddr)
	}
	for _, m := range c.Members {
		m.initial = strings.Join(initial, ",")
		m.Start(t)
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Kill()
		}
		if t.Failed() {
			for _, m := range c.Members {
				m.mu.Lock()
				out := m.out.String()
				m.mu.Unlock()
				if len(out) > 4000 {
					out = out[len(out)-4000:]
				}
				t.Logf("etcd %s output (tail):\n%s", m.Name, out)
			}
		}
	})
	c.WaitHealthy(t, 30*time.Second)
	return c
}

// Pid is a running member's process id; 0 while stopped.
func (m *Member) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.Pid()
}

// Endpoints are the members' client addresses.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientAddr)
	}
	return out
}

// WaitHealthy waits until a linearizable request succeeds on every
// running member.
func (c *Cluster) WaitHealthy(t testing.TB, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, m := range c.Members {
		if !m.Running() {
			continue
		}
		for !m.Healthy() {
			if time.Now().After(deadline) {
				t.Fatalf("etcd %s not healthy within %v", m.Name, within)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// Healthy asks the member's /health (true only with a quorum).
func (m *Member) Healthy() bool {
	conn, err := net.DialTimeout("tcp", m.ClientAddr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(conn, "GET /health HTTP/1.0\r\nHost: %s\r\n\r\n", m.ClientAddr)
	var b bytes.Buffer
	b.ReadFrom(conn)
	return strings.Contains(b.String(), `"health":"true"`)
}

// Start runs the member (again, with its data, after Stop).
func (m *Member) Start(t testing.TB) {
	t.Helper()
	state := "new"
	if _, err := os.Stat(m.dir); err == nil {
		state = "existing"
	}
	cmd := exec.Command(Binary(t),
		"--name", m.Name, "--data-dir", m.dir,
		"--listen-client-urls", "http://"+m.ClientAddr, "--advertise-client-urls", "http://"+m.ClientAddr,
		"--listen-peer-urls", "http://"+m.PeerAddr, "--initial-advertise-peer-urls", "http://"+m.PeerAddr,
		"--initial-cluster", m.initial, "--initial-cluster-state", state, "--initial-cluster-token", "canaryd-test",
		"--heartbeat-interval", "100", "--election-timeout", "1000", "--log-level", "warn")
	out := &bytes.Buffer{}
	w := &lockedWriter{mu: &m.mu, b: out}
	cmd.Stdout, cmd.Stderr = w, w
	proc, err := proctest.Start(cmd)
	if err != nil {
		t.Fatalf("start etcd %s: %v", m.Name, err)
	}
	m.mu.Lock()
	m.proc, m.out = proc, out
	m.mu.Unlock()
}

// Stop ends the member (SIGTERM) and waits for it.
func (m *Member) Stop() {
	m.mu.Lock()
	proc := m.proc
	m.proc = nil
	m.mu.Unlock()
	if proc != nil {
		proc.Stop(10 * time.Second)
	}
}

// Kill ends the member at once.
func (m *Member) Kill() {
	m.mu.Lock()
	proc := m.proc
	m.proc = nil
	m.mu.Unlock()
	if proc != nil {
		proc.Kill()
	}
}

// Running reports whether the member's process runs.
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc != nil
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
