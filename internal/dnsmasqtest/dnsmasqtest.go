// Package dnsmasqtest runs a real DNS server, Debian's dnsmasq
// (dnsmasq-base), on a loopback port for tests: it never asks another
// resolver (-C /dev/null --no-resolv --no-hosts), serves the names of a
// hosts file it re-reads on SIGHUP, and answers NXDOMAIN for unknown
// names under test. (--local=/test/). Other records (SRV, TXT) and modes
// (SERVFAIL, down) change with a restart on the same port.
package dnsmasqtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"canaryd/internal/proctest"
)

// Binary finds dnsmasq, or skips the test (fails it when
// CANARYD_REQUIRE_DNSMASQ is set, as scripts/test.sh does).
func Binary(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"dnsmasq", "/usr/sbin/dnsmasq"} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	if os.Getenv("CANARYD_REQUIRE_DNSMASQ") != "" {
		t.Fatal("dnsmasq is not installed; run ./scripts/test.sh, which installs Debian's dnsmasq-base")
	}
	t.Skip("dnsmasq not installed (./scripts/test.sh installs Debian's dnsmasq-base)")
	return ""
}

// Server is one dnsmasq on a loopback port.
type Server struct {
	t     testing.TB
	bin   string
	Addr  string // 127.0.0.1:port, the resolver to configure
	Hosts string // the hosts file (addresses and names, /etc/hosts style)
	// helper is a second dnsmasq that serves the hosts file to the main
	// one in SERVFAIL mode (started then).
	helper     *exec.Cmd
	helperAddr string

	mu   sync.Mutex
	proc *proctest.Proc // nil while stopped
	out  bytes.Buffer
}

// Start runs dnsmasq serving hosts (lines "127.0.0.2 web.test"), with
// extra flags such as --srv-host=... .
func Start(t testing.TB, hosts string, extra ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: Binary(t), Addr: freeUDP(t), Hosts: filepath.Join(t.TempDir(), "hosts")}
	// dnsmasq run as root drops to nobody: the file stays world-readable,
	// and --user keeps it as the caller anyway.
	if err := os.Chmod(filepath.Dir(s.Hosts), 0o755); err != nil {
		t.Fatal(err)
	}
	s.SetHosts(hosts)
	s.Run(extra...)
	t.Cleanup(func() {
		s.Stop()
		s.stopHelper()
		if t.Failed() {
			s.mu.Lock()
			t.Logf("dnsmasq output:\n%s", s.out.String())
			s.mu.Unlock()
		}
	})
	return s
}

// freeUDP is a loopback port free for UDP and TCP (dnsmasq takes both).
func freeUDP(t testing.TB) string {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no free loopback port for dnsmasq")
	return ""
}

// base are the flags every dnsmasq here runs with; local: names under
// test. are this server's own (NXDOMAIN when unknown).
func (s *Server) base(addr string, local bool) []string {
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"--no-daemon", "-C", "/dev/null", "--no-resolv", "--no-hosts", "--log-queries",
		"--listen-address=" + host, "--port=" + port, "--bind-interfaces"}
	if local {
		args = append(args, "--local=/test/")
	}
	if u, err := user.Current(); err == nil && u.Uid == "0" {
		args = append(args, "--user=root")
	}
	return args
}

// SetHosts writes the hosts file (SIGHUP makes a running dnsmasq read it).
func (s *Server) SetHosts(hosts string) {
	if err := os.WriteFile(s.Hosts, []byte(hosts), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// Run starts dnsmasq on its port, answering from the hosts file.
func (s *Server) Run(extra ...string) {
	s.start(append(append(s.base(s.Addr, true), "--addn-hosts="+s.Hosts), extra...))
}

// RunServFail restarts dnsmasq as a DNSSEC-validating forwarder in front
// of an unsigned copy of the names: every answer fails validation, and
// dnsmasq answers SERVFAIL, as a resolver does when its upstream breaks.
func (s *Server) RunServFail() {
	s.Stop()
	if s.helper == nil {
		s.helperAddr = freeUDP(s.t)
		cmd := exec.Command(s.bin, append(s.base(s.helperAddr, true), "--addn-hosts="+s.Hosts)...)
		if err := cmd.Start(); err != nil {
			s.t.Fatal(err)
		}
		s.helper = cmd
		waitPort(s.t, s.helperAddr)
	}
	args := append(s.base(s.Addr, false), // it forwards
		"--dnssec", "--dnssec-check-unsigned",
		"--trust-anchor=.,20326,8,2,E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D",
		"--server="+strings.Replace(s.helperAddr, ":", "#", 1))
	s.start(args)
}

func (s *Server) stopHelper() {
	if s.helper != nil {
		s.helper.Process.Kill()
		s.helper.Wait()
		s.helper = nil
	}
}

func (s *Server) start(args []string) {
	s.t.Helper()
	s.Stop()
	cmd := exec.Command(s.bin, args...)
	s.mu.Lock()
	fmt.Fprintf(&s.out, "--- dnsmasq %s\n", strings.Join(args, " "))
	w := &lockedWriter{s: s}
	s.mu.Unlock()
	cmd.Stdout, cmd.Stderr = w, w
	proc, err := proctest.Start(cmd)
	if err != nil {
		s.t.Fatalf("start dnsmasq: %v", err)
	}
	s.mu.Lock()
	s.proc = proc
	s.mu.Unlock()
	waitPort(s.t, s.Addr)
}

// waitPort waits for dnsmasq's TCP listener (it binds UDP and TCP
// together).
func waitPort(t testing.TB, addr string) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("dnsmasq did not listen on %s", addr)
}

// HUP makes dnsmasq read the hosts file again (and clears its cache).
func (s *Server) HUP() {
	s.mu.Lock()
	proc := s.proc
	s.mu.Unlock()
	if proc != nil {
		proc.Signal(syscall.SIGHUP)
	}
}

// Stop ends dnsmasq: the resolver is down until Run.
func (s *Server) Stop() {
	s.mu.Lock()
	proc := s.proc
	s.proc = nil
	s.mu.Unlock()
	if proc != nil {
		proc.Stop(5 * time.Second)
	}
}

type lockedWriter struct{ s *Server }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if w.s.out.Len() > 1<<20 {
		return len(p), nil
	}
	return w.s.out.Write(p)
}
