package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/internal/etcdtest"
	"canaryd/internal/testcerts"
)

// crowdNofile is the descriptor limit canaryd runs under in the crowd
// test (prlimit): its derived limits are then 1,536 connections and 384
// per client, well under the attack's 3,000.
const crowdNofile = 4096

// bigSite is nginx serving / (a few bytes) and /big (4 MiB), a server
// nobody here wrote, as the instance.
func bigSite(t *testing.T) string {
	t.Helper()
	return nginxServerWith(t, "crowd", map[string][]byte{"big": make([]byte, 4<<20)})
}

// startUnderPrlimit runs canaryd with nofile descriptors (prlimit) in
// front of backend, with more top-level YAML.
func startUnderPrlimit(t *testing.T, nofile int, backend, top string) *proc {
	t.Helper()
	prlimit := tool(t, "prlimit", "CANARYD_REQUIRE_PRLIMIT", "/usr/bin/prlimit")
	cfg := writeConfig(t, fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
state_dir: %q
%s
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["%s"] }]
`, t.TempDir(), top, backend))
	args := []string{fmt.Sprintf("--nofile=%d:%d", nofile, nofile), binary, "run", "--config", cfg}
	return startCmd(t, exec.Command(prlimit, args...), args)
}

// victimRun is what the well-behaved client saw.
type victimRun struct {
	sent, ok int
	p99      time.Duration
}

func (v victimRun) share() float64 { return float64(v.ok) / float64(max(v.sent, 1)) }

// victim sends paced requests from 127.0.0.2 (4 workers, one request
// every 10 ms each: about 400 a second) for d, on keep-alive connections.
func victim(addr string, d time.Duration) victimRun {
	var mu sync.Mutex
	var run victimRun
	var lat []time.Duration
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}).DialContext}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			for tick := time.Now(); time.Now().Before(end); tick = tick.Add(10 * time.Millisecond) {
				time.Sleep(time.Until(tick))
				start := time.Now()
				resp, err := c.Get("http://" + addr + "/")
				ok := err == nil && resp.StatusCode == 200
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				took := time.Since(start)
				mu.Lock()
				run.sent++
				if ok {
					run.ok++
					lat = append(lat, took)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	if len(lat) > 0 {
		run.p99 = lat[len(lat)*99/100]
	}
	return run
}

// crowd is one source's connections, held open.
type crowd struct {
	mu    sync.Mutex
	conns []net.Conn
	stop  chan struct{}
	wg    sync.WaitGroup
	made  atomic.Int64 // connections or requests made
	once  sync.Once
}

// gather opens n connections from 127.0.0.1 (8 dialers), each writing
// first; those canaryd refuses are closed by it at once.
func gather(addr string, n int, first string, rcvbuf int) *crowd {
	c := &crowd{stop: make(chan struct{})}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, Timeout: 5 * time.Second}
			for next.Add(1) <= int64(n) {
				conn, err := d.Dial("tcp", addr)
				if err != nil {
					continue
				}
				if rcvbuf > 0 {
					conn.(*net.TCPConn).SetReadBuffer(rcvbuf)
				}
				conn.SetWriteDeadline(time.Now().Add(time.Second))
				conn.Write([]byte(first))
				c.mu.Lock()
				c.conns = append(c.conns, conn)
				c.mu.Unlock()
				c.made.Add(1)
			}
		}()
	}
	wg.Wait()
	return c
}

// trickle writes s to every connection still open once a second until
// close, a tenth of them every 100 ms: the attacker's own work is spread
// out, as it would be across the many machines of a real one (here it
// shares the two cores with the client being measured).
func (c *crowd) trickle(s string) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		dead := map[net.Conn]bool{}
		for tick := 0; ; tick++ {
			select {
			case <-c.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			c.mu.Lock()
			conns := c.conns
			c.mu.Unlock()
			for i := tick % 10; i < len(conns); i += 10 {
				if dead[conns[i]] {
					continue
				}
				conns[i].SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
				if _, err := conns[i].Write([]byte(s)); err != nil && !isTimeout(err) {
					dead[conns[i]] = true // closed by canaryd
				}
			}
		}
	}()
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// close ends the crowd (once: a test may close it early and defer it too).
func (c *crowd) close() {
	c.once.Do(func() {
		close(c.stop)
		c.wg.Wait()
		for _, conn := range c.conns {
			conn.Close()
		}
	})
}

// flood dials from 127.0.0.1 with 512 dialers, holding each connection
// 500 ms, until close (at most 20,000 connections): about 1,000 new
// connections a second, more open at once than the per-client limit.
func flood(addr string) *crowd {
	c := &crowd{stop: make(chan struct{})}
	for range 512 {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, Timeout: 5 * time.Second}
			for c.made.Add(1) <= 20000 {
				select {
				case <-c.stop:
					return
				default:
				}
				if conn, err := d.Dial("tcp", addr); err == nil {
					select {
					case <-c.stop:
					case <-time.After(500 * time.Millisecond):
					}
					conn.Close()
				}
			}
		}()
	}
	return c
}

// requests sends GETs in a closed loop from 127.0.0.1 on 64 keep-alive
// connections until close: a flood of cheap requests.
func requests(addr string) *crowd {
	c := &crowd{stop: make(chan struct{})}
	for range 64 {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}).DialContext}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			for {
				select {
				case <-c.stop:
					return
				default:
				}
				if resp, err := cl.Get("http://" + addr + "/"); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				c.made.Add(1)
			}
		}()
	}
	return c
}

// procRSS is a process's resident memory, from /proc.
func procRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// The hostile crowd: one source (127.0.0.1) holds thousands of slow
// connections, each kind in turn (slow headers, slow bodies, slow
// readers of a 4 MiB answer, a connection flood), against canaryd run
// by prlimit with 4,096 descriptors and nginx as the instance, while
// another source (127.0.0.2) keeps sending. The other source keeps at
// least 99% of its requests served with its p99 at most twice the p99
// just before the attack (plus 5 ms of scheduler noise on a shared
// 2-core machine); canaryd's RSS stays under 256 MiB; the admin listener
// answers throughout; afterwards descriptors and goroutines are back at
// their level before the attacks. The figures go in docs/reliability.md
// ("Overload").
func TestHostileCrowd(t *testing.T) {
	long(t)
	// Idle upstream connections close soon, so that the descriptors after
	// the attacks can be compared with those before.
	p := startUnderPrlimit(t, crowdNofile, bigSite(t), "upstream: { idle_conn_timeout: 2s }")
	m := p.waitLog(t, "canaryd serving")
	addr, admin := m["listen"].(string), m["admin"].(string)
	limits := p.waitLog(t, "overload limits")
	if limits["descriptor_limit"] != float64(crowdNofile) || limits["max_connections_per_client"] != float64(384) {
		t.Fatalf("limits at start: %v; want 384 per client from %d descriptors", limits, crowdNofile)
	}
	pid := p.cmd.Process.Pid

	// The admin listener is asked every 100 ms throughout.
	var adminFailed atomic.Int64
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	adminDone := make(chan struct{})
	go func() {
		defer close(adminDone)
		c := &http.Client{Timeout: 2 * time.Second}
		for adminCtx.Err() == nil {
			resp, err := c.Get("http://" + admin + "/healthz")
			if err != nil || resp.StatusCode != 200 {
				adminFailed.Add(1)
			}
			if err == nil {
				resp.Body.Close()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	defer func() { stopAdmin(); <-adminDone }()

	victim(addr, 2*time.Second) // warm up
	baseFds, baseG := fdCount(t, pid), scrapeGauge(t, admin, "go_goroutines")
	peakRSS := int64(0)
	// A request flood competes for the CPU, which admission limits do
	// not share out: its p99 is measured and reported, not bounded.
	// reference, when given, runs during the "before" measurement: an
	// attack whose own cost to the machine (the attacker shares its two
	// cores) is measured apart from canaryd's.
	//
	// A p99 over the bound is measured once more, the whole phase again,
	// and fails only if it is over again: other test packages share the
	// two cores in CI, and a single burst of theirs is not canaryd's.
	phase := func(name string, boundP99 bool, reference, attack func() *crowd) {
		for attempt := 1; ; attempt++ {
			var ref *crowd
			if reference != nil {
				ref = reference()
			}
			before := victim(addr, 2*time.Second)
			if ref != nil {
				ref.close()
			}
			refusedBefore := scrapeGauge(t, admin, "canaryd_overload_refused_total{limit=\"max_connections_per_client\"}")
			c := attack()
			during := victim(addr, 4*time.Second)
			rss, fds, g := procRSS(t, pid), fdCount(t, pid), scrapeGauge(t, admin, "go_goroutines")
			peakRSS = max(peakRSS, rss)
			refused := scrapeGauge(t, admin, "canaryd_overload_refused_total{limit=\"max_connections_per_client\"}") - refusedBefore
			made := c.made.Load()
			c.close()
			t.Logf("%s: %d attacker connections or requests (%v connections refused per client); other client %d/%d served (%.2f%%), p99 %v (before %v); RSS %.0f MiB, fds %d, goroutines %.0f",
				name, made, refused, during.ok, during.sent, 100*during.share(), during.p99.Round(100*time.Microsecond), before.p99.Round(100*time.Microsecond), float64(rss)/(1<<20), fds, g)
			if during.share() < 0.99 {
				t.Errorf("%s: the other client had %.2f%% served; want at least 99%%", name, 100*during.share())
			}
			if rss > 256<<20 {
				t.Errorf("%s: RSS %d MiB; want under 256", name, rss>>20)
			}
			if !boundP99 || during.p99 <= 2*before.p99+5*time.Millisecond {
				return
			}
			if attempt == 2 {
				t.Errorf("%s: the other client's p99 went from %v to %v, twice; want at most twice (+5 ms)", name, before.p99, during.p99)
				return
			}
			t.Logf("%s: p99 over the bound; measuring the phase once more", name)
		}
	}
	phase("slow headers", true, nil, func() *crowd {
		c := gather(addr, 3000, "GET / HTTP/1.1\r\nHost: x\r\n", 0)
		c.trickle("X-Slow: 1\r\n")
		return c
	})
	phase("slow bodies", true, nil, func() *crowd {
		c := gather(addr, 3000, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n", 0)
		c.trickle("x")
		time.Sleep(500 * time.Millisecond)
		// Buffered bodies hold no upstream connection: about one
		// descriptor per admitted upload, not two.
		if fds := fdCount(t, pid); fds > baseFds+384+64 {
			t.Errorf("slow bodies: %d descriptors for 384 admitted uploads (%d before); they hold upstream connections", fds, baseFds)
		}
		return c
	})
	phase("slow readers", true, nil, func() *crowd {
		return gather(addr, 3000, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n", 4096)
	})
	// A flood of connections costs the machine itself (the dials, the
	// kernel's handshakes) whoever answers them: the p99 it is held to is
	// that of the same flood against a bare listener that accepts and
	// closes, measured in the same run. Without that reference the flood
	// alone, aimed at no canaryd at all, moves this 2-core machine's p99
	// from about 4 ms to about 18 ms.
	bare, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var bareWG sync.WaitGroup
	bareWG.Add(1)
	go func() {
		defer bareWG.Done()
		for {
			c, err := bare.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	phase("connection flood", true, func() *crowd { c := flood(bare.Addr().String()); time.Sleep(500 * time.Millisecond); return c }, func() *crowd {
		c := flood(addr)
		time.Sleep(500 * time.Millisecond)
		return c
	})
	bare.Close()
	bareWG.Wait()
	phase("request flood", false, nil, func() *crowd {
		c := requests(addr)
		time.Sleep(500 * time.Millisecond)
		return c
	})

	// Back to the baseline: descriptors and goroutines.
	var fds int
	var g float64
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		fds, g = fdCount(t, pid), scrapeGauge(t, admin, "go_goroutines")
		if fds <= baseFds+10 && g <= baseG+10 {
			break
		}
	}
	t.Logf("after: fds %d (before %d), goroutines %.0f (before %.0f), peak RSS %.0f MiB", fds, baseFds, g, baseG, float64(peakRSS)/(1<<20))
	if fds > baseFds+10 || g > baseG+10 {
		t.Errorf("after the attacks: %d descriptors (before %d), %.0f goroutines (before %.0f)", fds, baseFds, g, baseG)
	}
	if n := adminFailed.Load(); n > 0 {
		t.Errorf("the admin listener failed %d times during the attacks", n)
	}
	p.mu.Lock()
	out := p.out.String()
	p.mu.Unlock()
	if strings.Contains(out, "too many open files") {
		t.Error("canaryd ran out of descriptors")
	}
	if n := strings.Count(out, "refused over server.limits"); n > 45 {
		t.Errorf("%d refusal log lines in about 30s; want at most one a second", n)
	}
}

// Two cluster members share their session ticket keys through etcd: a
// session begun on one resumes on the other, over TLS 1.2 and 1.3, and
// keys rotate (session_ticket_rotation 2s): a ticket still resumes after
// a rotation, and no longer once its key is three rotations old.
func TestClusterSharesSessionTickets(t *testing.T) {
	long(t)
	etcd := etcdtest.Start(t, 1)
	name := fmt.Sprintf("tix%d", rand.IntN(1e9))
	blue := backendProc(t, "blue")
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "CA")
	cert, key := ca.WriteLeaf(t, dir, "site", "site.test")
	var members []*canaryRun
	for i := range 2 {
		cfg := writeConfig(t, fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
state_dir: %q
tls: { cert_file: %s, key_file: %s, session_ticket_rotation: 2s }
cluster:
  name: %s
  member: m%d
  etcd: { endpoints: [%q] }
  session_ttl: 2s
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["%s"] }]
`, t.TempDir(), cert, key, name, i, etcd.Endpoints()[0], blue))
		members = append(members, startCanaryd(t, cfg))
	}
	url := func(m *canaryRun) string { return strings.Replace(m.proxy, "http://", "https://", 1) + "/" }
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		// get fetches / from m on a new connection with the session
		// cache, and tells whether the session was resumed.
		get := func(m *canaryRun, cache tls.ClientSessionCache) bool {
			t.Helper()
			tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{
				RootCAs: ca.Pool, ServerName: "site.test", MaxVersion: version, ClientSessionCache: cache,
			}}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url(m))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.TLS.DidResume
		}
		// Both members hold the cluster's keys a moment after they start.
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			cache := tls.NewLRUClientSessionCache(1)
			get(members[0], cache)
			if get(members[1], cache) {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("TLS %x: a session begun on member 0 never resumed on member 1", version)
			}
		}
		// A fresh ticket from member 0 (a full handshake: the newest key),
		// kept as it is for the checks below.
		issued := time.Now()
		fresh := tls.NewLRUClientSessionCache(1)
		if get(members[0], fresh) {
			t.Fatal("a first handshake was a resumption")
		}
		ticket := frozenSession(t, fresh)
		time.Sleep(2500 * time.Millisecond)
		// Rotations come at least 2s apart, so until 4s after the ticket
		// its key still decrypts; a loaded machine that oversleeps past
		// that leaves the check not judged.
		if resumed := get(members[1], ticket); !resumed && time.Since(issued) < 4*time.Second {
			t.Errorf("TLS %x: a ticket from before a rotation did not resume on the other member", version)
		} else if !resumed {
			t.Logf("TLS %x: the check came %v after the ticket, past two rotations: not judged", version, time.Since(issued))
		}
		// Three rotations later its key is gone everywhere: they take
		// 7.5s at most (a member looks every 500ms), 11s leaves room for
		// a loaded machine.
		time.Sleep(time.Until(issued.Add(11 * time.Second)))
		if get(members[1], ticket) || get(members[0], ticket) {
			t.Errorf("TLS %x: a ticket resumed 11s after it was issued, with keys rotated every 2s and 3 kept", version)
		}
	}
}

// frozen is a client session cache that always offers one session and
// keeps no new one, so a test can present the same ticket again.
type frozen struct{ s *tls.ClientSessionState }

func (f frozen) Get(string) (*tls.ClientSessionState, bool) { return f.s, true }
func (f frozen) Put(string, *tls.ClientSessionState)        {}

func frozenSession(t *testing.T, c tls.ClientSessionCache) frozen {
	t.Helper()
	s, ok := c.Get("site.test")
	if !ok || s == nil {
		t.Fatal("no session ticket was received")
	}
	return frozen{s}
}

// procCPU is a process's CPU time so far (user + system), from /proc.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// Limits set above what the descriptors allow (the mistake the derived
// defaults prevent): canaryd runs out of descriptors, and then its
// accept loop backs off instead of spinning, logs a few lines rather
// than thousands, and serves again as soon as the connections go.
func TestDescriptorExhaustionDoesNotSpin(t *testing.T) {
	long(t)
	p := startUnderPrlimit(t, 128, bigSite(t), "server: { limits: { max_connections: 5000, max_connections_per_client: 5000 } }")
	addr := p.waitLog(t, "canaryd serving")["listen"].(string)
	pid := p.cmd.Process.Pid
	c := gather(addr, 300, "GET / HTTP/1.1\r\nHost: x\r\n", 0)
	defer c.close()
	time.Sleep(500 * time.Millisecond)
	cpu := procCPU(t, pid)
	time.Sleep(3 * time.Second)
	used := procCPU(t, pid) - cpu
	p.mu.Lock()
	out := p.out.String()
	p.mu.Unlock()
	accepts := strings.Count(out, "Accept error")
	t.Logf("out of descriptors for 3s: %v of CPU, %d accept error lines", used, accepts)
	if !strings.Contains(out, "too many open files") {
		t.Fatal("canaryd never ran out of descriptors; the test proves nothing")
	}
	if used > 600*time.Millisecond {
		t.Errorf("canaryd used %v of CPU in 3s while out of descriptors: its accept loop spins", used)
	}
	if accepts > 60 {
		t.Errorf("%d accept error lines: the log floods", accepts)
	}
	c.close()
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(end) {
			t.Fatalf("not serving 15s after the connections closed: %v", err)
		}
	}
}
