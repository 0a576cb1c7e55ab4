// Package cluster measures canaryd's cluster package at size: N members
// on one real etcd (Debian's etcd-server), R routes under rollout at once.
// It reports etcd's own byte counters in and out, the members' CPU, the
// time from a leader's write to every member serving it (convergence),
// and the failover after the leader is cut off from etcd (as a crash or
// a partition would: its lease runs out).
//
// The members are the cluster package's, in this one process, each on
// its own connection to etcd (through a TCP proxy, cut to fail the
// leader over): 32 canaryd processes with 200 routes under rollout and
// traffic on each would measure this machine's two cores, not the
// protocol. Their data plane is a counter per pool that grows at a fixed
// rate while its route's rollout is under way, split by the weights the
// member serves, with latencies spread over the buckets; the leader reads
// the sums of every pool of every route twice a second, as the rollout
// controllers do (evidence and tripwire). The end-to-end tests in
// cmd/canaryd run real canaryd processes on real etcd.
//
// In CI (go test ./...): N = 8, R = 50, with the goals asserted. The
// benchmark's matrix:
//
//	GOTOOLCHAIN=auto go test ./bench/cluster -run TestClusterScale -v -timeout 30m -args -matrix
//	GOTOOLCHAIN=auto go test ./bench/cluster -run TestClusterScale -v -args -members 32 -rollouts 200
package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"canaryd/cluster"
	"canaryd/config"
	"canaryd/evidence"
	"canaryd/internal/etcdtest"
	"canaryd/internal/tcpproxy"
	"canaryd/metrics"
	"canaryd/rollout"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	flagMembers  = flag.Int("members", 8, "cluster members")
	flagRollouts = flag.Int("rollouts", 50, "routes under rollout at once")
	flagWindow   = flag.Duration("window", 10*time.Second, "the measured steady state")
	flagMatrix   = flag.Bool("matrix", false, "run N = 3, 8, 16, 32 × R = 1, 50, 200 and print the table")
	flagRate     = flag.Int("rate", 20, "requests a second per route on each member")
)

// Goals of issue 34 (at N = 32, R = 200; asserted at every size run).
const (
	sessionTTL     = 2 * time.Second
	convergenceMax = time.Second
	failoverMax    = sessionTTL + 2*time.Second
	stepEvery      = 2 * time.Second // a new weight for every route
)

func TestClusterScale(t *testing.T) {
	etcdtest.Binary(t)
	if testing.Short() {
		t.Skip("-short: the cluster scale run takes about 30 s")
	}
	type size struct{ n, r int }
	sizes := []size{{*flagMembers, *flagRollouts}}
	if *flagMatrix {
		sizes = nil
		for _, n := range []int{3, 8, 16, 32} {
			for _, r := range []int{1, 50, 200} {
				sizes = append(sizes, size{n, r})
			}
		}
	}
	var rows []result
	for _, s := range sizes {
		res := measure(t, s.n, s.r)
		rows = append(rows, res)
		t.Logf("%s", res.row())
		if t.Failed() {
			break
		}
	}
	fmt.Println("\n| members | rollouts | etcd in | etcd out | out per member | member CPU | etcd CPU | heap per member | convergence p50 / max | failover |")
	fmt.Println("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rows {
		fmt.Println(r.row())
	}
}

type result struct {
	n, r                 int
	inBps, outBps        float64
	cpuMember, cpuEtcd   float64 // share of one core
	heapMember           float64 // bytes
	convP50, convMax     time.Duration
	failover             time.Duration
	writes, convergences int
}

func (r result) row() string {
	return fmt.Sprintf("| %d | %d | %s/s | %s/s | %s/s | %.1f%% | %.1f%% | %.1f MiB | %v / %v | %v |", r.n, r.r,
		size(r.inBps), size(r.outBps), size(r.outBps/float64(r.n)), 100*r.cpuMember, 100*r.cpuEtcd, r.heapMember/(1<<20),
		r.convP50.Round(time.Millisecond), r.convMax.Round(time.Millisecond), r.failover.Round(10*time.Millisecond))
}

func size(b float64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.2f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

// measure runs one size: its own etcd, n members, r rollouts.
func measure(t *testing.T, n, r int) result {
	var res result
	res.n, res.r = n, r
	t.Run(fmt.Sprintf("N=%d,R=%d", n, r), func(t *testing.T) {
		etcd := etcdtest.Start(t, 1)
		routes := make([]string, r)
		hashes := map[string]string{}
		for i := range routes {
			routes[i] = fmt.Sprintf("svc-%03d", i)
			hashes[routes[i]] = "h"
		}
		planes := make([]*plane, n)
		members := make([]*cluster.Cluster, n)
		links := make([]*tcpproxy.Proxy, n)
		for i := range members {
			planes[i] = newPlane(routes, *flagRate)
			links[i] = tcpproxy.Start(t, etcd.Endpoints()...)
			c, err := cluster.New(cluster.Options{
				Config: config.Cluster{Name: "scale", Etcd: config.ClusterEtcd{Endpoints: []string{links[i].Addr()}, DialTimeout: config.Duration(2 * time.Second)},
					SessionTTL: config.Duration(sessionTTL), PartitionTimeout: config.Duration(time.Minute), OnPartition: "hold"},
				Member: fmt.Sprintf("m%02d", i), Handler: planes[i], Metrics: metrics.NewCluster(prometheus.NewRegistry()),
				Info: cluster.Info{Addr: fmt.Sprintf("m%02d", i), Routes: hashes},
			})
			if err != nil {
				t.Fatal(err)
			}
			c.Start()
			members[i] = c
			planes[i].start()
		}
		defer func() {
			for i, c := range members {
				c.Close()
				planes[i].stop()
			}
		}()
		leaderOf := func() int {
			for i, c := range members {
				if c.Leading() {
					return i
				}
			}
			return -1
		}
		wait(t, 30*time.Second, "a leader and every member in its view", func() bool {
			l := leaderOf()
			return l >= 0 && len(members[l].View().Members) == n
		})
		lead := leaderOf()

		// The rollouts: every route gets a new weight every stepEvery,
		// written by the leader; the leader reads every pool's sums
		// twice a second meanwhile.
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var mu sync.Mutex
		type write struct {
			route string
			step  int
			at    time.Time
		}
		var writes []write
		wg.Add(2)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(stepEvery)
			defer tick.Stop()
			for step := 1; ; step++ {
				for _, route := range routes {
					st := fmt.Sprintf(`{"route":%q,"phase":"progressing","canary":"canary","stable":"stable","step":%d,"weight_bp":%d}`, route, step, 500*(1+step%4))
					if err := members[lead].SaveState(route, []byte(st), true); err != nil {
						t.Errorf("the leader's write of %s: %v", route, err)
						return
					}
					planes[lead].State(route, []byte(st)) // the leader serves what it writes
					mu.Lock()
					writes = append(writes, write{route, step, time.Now()})
					mu.Unlock()
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
		go func() {
			defer wg.Done()
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				for _, route := range routes {
					for _, pool := range []string{"canary", "stable"} {
						members[lead].Traffic(route, pool, planes[lead].traffic(route, pool))
					}
				}
			}
		}()

		// Warm up (every member in every rollout), then the window.
		time.Sleep(2 * stepEvery)
		in0, out0 := etcdBytes(t, etcd.Endpoints()[0])
		cpu0, ecpu0, t0 := selfCPU(), procCPU(etcd.Members[0].Pid()), time.Now()
		time.Sleep(*flagWindow)
		in1, out1 := etcdBytes(t, etcd.Endpoints()[0])
		cpu1, ecpu1, t1 := selfCPU(), procCPU(etcd.Members[0].Pid()), time.Now()
		cancel()
		wg.Wait()
		secs := t1.Sub(t0).Seconds()
		res.inBps, res.outBps = (in1-in0)/secs, (out1-out0)/secs
		res.cpuMember = (cpu1 - cpu0).Seconds() / secs / float64(n)
		res.cpuEtcd = (ecpu1 - ecpu0).Seconds() / secs
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		res.heapMember = float64(ms.HeapAlloc) / float64(n)

		// Convergence: from the leader's write to the last member serving
		// it, over every write of the window's steps.
		time.Sleep(5 * time.Second)
		var conv []time.Duration
		mu.Lock()
		for _, w := range writes {
			if w.at.Before(t0) || w.at.After(t1) {
				continue
			}
			var last time.Duration
			for i, p := range planes {
				if i == lead {
					continue
				}
				at, ok := p.served(w.route, w.step)
				if !ok {
					last = time.Hour // not served within 5 s: fails the goal below
					break
				}
				last = max(last, at.Sub(w.at))
			}
			conv = append(conv, last)
		}
		res.writes = len(writes)
		mu.Unlock()
		sort.Slice(conv, func(i, j int) bool { return conv[i] < conv[j] })
		if len(conv) == 0 {
			t.Fatal("no write in the window")
		}
		res.convergences = len(conv)
		res.convP50, res.convMax = conv[len(conv)/2], conv[len(conv)-1]

		// Every member's traffic reached the leader's sums: each served
		// the same rate, so the sum is about n times the leader's own.
		for _, route := range routes[:min(3, len(routes))] {
			own := planes[lead].traffic(route, "stable").Weighted.Requests
			sum := members[lead].Traffic(route, "stable", planes[lead].traffic(route, "stable")).Weighted.Requests
			if own == 0 || float64(sum) < 0.7*float64(n)*float64(own) {
				t.Errorf("route %s: the leader's sum is %d requests, its own %d: not every member's counts reached it", route, sum, own)
			}
		}

		// Failover: cut the leader off from etcd; another member leads
		// once its lease has run out.
		cut := time.Now()
		links[lead].Block()
		wait(t, 2*failoverMax, "another member leads", func() bool {
			for i, p := range planes {
				if i != lead && p.ledSince().After(cut) {
					return true
				}
			}
			return false
		})
		for i, p := range planes {
			if i != lead && p.ledSince().After(cut) {
				res.failover = p.ledSince().Sub(cut)
			}
		}
		links[lead].Unblock()

		if res.convMax > convergenceMax {
			t.Errorf("convergence %v (max over %d writes); want at most %v", res.convMax, len(conv), convergenceMax)
		}
		if res.failover > failoverMax {
			t.Errorf("failover %v; want at most session_ttl + 2 s = %v", res.failover, failoverMax)
		}
	})
	return res
}

func wait(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// etcdBytes reads etcd's own counters of its gRPC clients' bytes.
func etcdBytes(t *testing.T, addr string) (in, out float64) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		f, _ := strconv.ParseFloat(v, 64)
		switch name {
		case "etcd_network_client_grpc_received_bytes_total":
			in = f
		case "etcd_network_client_grpc_sent_bytes_total":
			out = f
		}
	}
	return in, out
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is a process's CPU time from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}

// plane is a member's data plane for the benchmark: a counter per pool
// that grows while its route's rollout is under way, split by the weight
// the member serves.
type plane struct {
	routes []string
	rate   int
	done   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	weight  map[string]int // basis points to the canary, as served
	under   map[string]bool
	counts  map[string]*[2]evidence.Traffic // canary, stable
	arrived map[string]map[int]time.Time    // route → step → when served
	led     time.Time
}

func newPlane(routes []string, rate int) *plane {
	p := &plane{routes: routes, rate: rate, done: make(chan struct{}), weight: map[string]int{}, under: map[string]bool{},
		counts: map[string]*[2]evidence.Traffic{}, arrived: map[string]map[int]time.Time{}}
	for _, r := range routes {
		p.counts[r] = &[2]evidence.Traffic{}
		p.arrived[r] = map[int]time.Time{}
	}
	return p
}

// start serves the traffic: every 100 ms a tenth of a second's requests
// of each route under way.
func (p *plane) start() {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		n := uint64(0)
		for {
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
			p.mu.Lock()
			for _, r := range p.routes {
				if !p.under[r] {
					continue
				}
				for k := 0; k < max(1, p.rate/10); k++ {
					n++
					pool := 1
					if int(n*7919%10000) < p.weight[r] {
						pool = 0
					}
					c := &p.counts[r][pool].Weighted
					c.Requests++
					if n%97 == 0 {
						c.Errors++
					}
					c.Latency[40+int(n*31%60)]++ // a spread of latencies
				}
			}
			p.mu.Unlock()
		}
	}()
}

func (p *plane) stop() { close(p.done); p.wg.Wait() }

func (p *plane) traffic(route, pool string) evidence.Traffic {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := 1
	if pool == "canary" {
		i = 0
	}
	return p.counts[route][i]
}

func (p *plane) served(route string, step int) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at, ok := p.arrived[route][step]
	return at, ok
}

func (p *plane) ledSince() time.Time { p.mu.Lock(); defer p.mu.Unlock(); return p.led }

func (p *plane) Lead()   { p.mu.Lock(); p.led = time.Now(); p.mu.Unlock() }
func (p *plane) Follow() {}
func (p *plane) State(route string, data []byte) {
	var st struct {
		Phase  string `json:"phase"`
		Step   int    `json:"step"`
		Weight int    `json:"weight_bp"`
	}
	json.Unmarshal(data, &st)
	p.mu.Lock()
	p.weight[route], p.under[route] = st.Weight, st.Phase == "progressing"
	if m := p.arrived[route]; m != nil {
		m[st.Step] = time.Now()
	}
	p.mu.Unlock()
}
func (p *plane) Command(string, rollout.Action) error   { return nil }
func (p *plane) Approve(string, rollout.Approval) error { return nil }
func (p *plane) Drift(string, []string)                 {}
func (p *plane) Settled(string, []string)               {}
func (p *plane) Partitioned(bool)                       {}
func (p *plane) Stats(route string) []cluster.PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.counts[route]
	if c == nil {
		return nil
	}
	return []cluster.PoolStats{{Route: route, Pool: "canary", Traffic: c[0]}, {Route: route, Pool: "stable", Traffic: c[1]}}
}
