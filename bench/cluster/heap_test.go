package cluster

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"canaryd/internal/etcdtest"
)

var flagHeap = flag.Duration("heap", 0, "run TestMemberHeap for this long (the issue's figure: 15m); 0 skips it")

// TestMemberHeap measures the heap of real canaryd processes with R routes
// under rollout and a trickle of traffic: three cluster members on one
// real etcd, and a single process with the same routes beside them. The
// goal (issue 34): a member ≤ 128 MiB of heap after 15 minutes, never
// more than 4× the single process.
//
//	GOTOOLCHAIN=auto go test ./bench/cluster -run TestMemberHeap -v -timeout 30m -args -heap 15m -rollouts 200
func TestMemberHeap(t *testing.T) {
	if *flagHeap == 0 {
		t.Skip("-heap not set: a run takes minutes (see the doc comment)")
	}
	r, dur := *flagRollouts, *flagHeap
	etcd := etcdtest.Start(t, 1)
	dir, bin, backend := setUp(t)
	type proc struct {
		name        string
		listen, adm string
		cmd         *exec.Cmd
		heap        []float64
	}
	var procs []*proc
	for i := 0; i < 4; i++ {
		p := &proc{name: fmt.Sprintf("m%d", i), listen: freeAddr(t), adm: freeAddr(t)}
		cl := fmt.Sprintf("cluster: { name: heap, member: m%d, etcd: { endpoints: [%q] }, session_ttl: 2s }\n", i, etcd.Endpoints()[0])
		if i == 3 {
			p.name, cl = "single", ""
		}
		var b strings.Builder
		fmt.Fprintf(&b, "listen: %q\nadmin: { listen: %q, pprof: true }\nstate_dir: %q\n%sroutes:\n", p.listen, p.adm, filepath.Join(dir, p.name), cl)
		b.WriteString(routes(r, backend, "steps: [1, 2, 3, 4, 100], interval: 5m, min_requests: 5"))
		p.cmd = start(t, bin, filepath.Join(dir, p.name+".yaml"), b.String())
		procs = append(procs, p)
	}
	for _, p := range procs {
		wait(t, 60*time.Second, p.name+" serving", func() bool { _, err := scrape(p.adm, "go_memstats_heap_alloc_bytes"); return err == nil })
	}
	// A trickle: every route gets a request a second on every process.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, p := range procs {
		go trickle(ctx, p.listen, r, r)
	}
	start := time.Now()
	marks := []time.Duration{time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute}
	fmt.Println("\nlive heap after a GC (in brackets: the heap as it stood before it, garbage included)")
	fmt.Println("\n| after | " + strings.Join(names(procs, func(p *proc) string { return p.name }), " | ") + " |")
	for _, m := range append(marks, dur) {
		if m > dur {
			continue
		}
		time.Sleep(time.Until(start.Add(m)))
		var cells []string
		for _, p := range procs {
			// The heap as it stands holds garbage not yet collected (up
			// to GOGC's 100% more); the figure is the live heap, read
			// right after a collection (pprof's heap profile with gc=1).
			peak, err := scrape(p.adm, "go_memstats_heap_alloc_bytes")
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			if resp, err := http.Get("http://" + p.adm + "/debug/pprof/heap?gc=1"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			h, err := scrape(p.adm, "go_memstats_heap_alloc_bytes")
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			p.heap = append(p.heap, h)
			cells = append(cells, fmt.Sprintf("%.1f MiB (%.0f)", h/(1<<20), peak/(1<<20)))
		}
		fmt.Printf("| %v | %s |\n", m, strings.Join(cells, " | "))
		if m == dur {
			break
		}
	}
	// The figure is of rollouts under way: every route still progressing.
	for _, p := range procs {
		if n := count(t, p.adm, `canaryd_rollout_state{`, `state="progressing"} 1`); n != r {
			t.Errorf("%s: %d of %d rollouts progressing at the end", p.name, n, r)
		}
	}
	single := procs[3].heap[len(procs[3].heap)-1]
	for _, p := range procs[:3] {
		h := p.heap[len(p.heap)-1]
		if h > 128<<20 {
			t.Errorf("%s: %.1f MiB of heap; want at most 128 MiB", p.name, h/(1<<20))
		}
		if h > 4*single {
			t.Errorf("%s: %.1f MiB of heap, %.1f× the single process's %.1f MiB; want at most 4×", p.name, h/(1<<20), h/single, single/(1<<20))
		}
	}
}

func names[T any](xs []T, f func(T) string) []string {
	var out []string
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

func serve(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// scrape reads one metric of a process's admin /metrics.
func scrape(admin, name string) (float64, error) {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in %s/metrics", name, admin)
}

// count is the number of lines of a process's /metrics with both parts.
func count(t *testing.T, admin, prefix, suffix string) int {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, prefix) && strings.HasSuffix(l, suffix) {
			n++
		}
	}
	return n
}

// trickle sends perSecond requests a second to a process until ctx ends,
// over its r routes in turn.
func trickle(ctx context.Context, listen string, r, perSecond int) {
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	defer tick.Stop()
	for k := 0; ctx.Err() == nil; k++ {
		if resp, err := http.Get(fmt.Sprintf("http://%s/svc-%03d/", listen, k%r)); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// setUp builds canaryd and starts one backend for every instance: the
// work directory, the binary, the backend's address.
func setUp(t *testing.T) (dir, bin, backend string) {
	dir = t.TempDir()
	bin = filepath.Join(dir, "canaryd")
	if out, err := exec.Command("go", "build", "-o", bin, "canaryd/cmd/canaryd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return dir, bin, serve(t)
}

// routes are r routes svc-NNN (path /svc-NNN/), each with a rollout of
// green over blue (both on backend) with the given settings.
func routes(r int, backend, rollout string) string {
	var b strings.Builder
	for k := 0; k < r; k++ {
		fmt.Fprintf(&b, `  - name: svc-%03d
    match: { path_prefix: "/svc-%03d/" }
    rollout: { stable: blue, canary: green, %s,
      analysis: { max_error_rate: 0.5 } }
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
`, k, k, rollout, backend, backend)
	}
	return b.String()
}

// start writes a config and runs canaryd on it until the test's end.
func start(t *testing.T, bin, cfg, yaml string) *exec.Cmd {
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfg, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}
