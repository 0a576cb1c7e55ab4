package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"canaryd/admin"
	"canaryd/internal/etcdtest"
)

var flagProcesses = flag.Bool("processes", false, "run TestClusterProcesses: real canaryd processes (-members, -rollouts)")

// TestClusterProcesses is bench/cluster with real canaryd processes: N
// members on one real etcd, R routes under rollout (steps of 10% every
// 2 s, real requests through every member), measured as the in-process
// run is: etcd's bytes in and out, the members' CPU, the time from the
// leader's write to the last member's acknowledgement (the leader's
// canaryd_cluster_state_lag_seconds, read every second), and the
// failover after kill -9 of the leader.
//
//	GOTOOLCHAIN=auto go test ./bench/cluster -run TestClusterProcesses -v -args -processes -members 8 -rollouts 50
func TestClusterProcesses(t *testing.T) {
	if !*flagProcesses {
		t.Skip("-processes not set: a run takes a minute or two (see the doc comment)")
	}
	n, r := *flagMembers, *flagRollouts
	etcd := etcdtest.Start(t, 1)
	dir, bin, backend := setUp(t)
	type member struct {
		id, listen, adm string
		cmd             *exec.Cmd
	}
	var ms []*member
	for i := 0; i < n; i++ {
		m := &member{id: fmt.Sprintf("m%d", i), listen: freeAddr(t), adm: freeAddr(t)}
		var b strings.Builder
		fmt.Fprintf(&b, "listen: %q\nadmin: { listen: %q }\nstate_dir: %q\n", m.listen, m.adm, filepath.Join(dir, m.id))
		fmt.Fprintf(&b, "cluster: { name: procs, member: %s, etcd: { endpoints: [%q] }, session_ttl: 2s }\nroutes:\n", m.id, etcd.Endpoints()[0])
		b.WriteString(routes(r, backend, "steps: [10, 20, 30, 40, 50, 60, 70, 80, 90, 100], interval: 2s, min_requests: 1"))
		m.cmd = start(t, bin, filepath.Join(dir, m.id+".yaml"), b.String())
		ms = append(ms, m)
	}
	leaderOf := func(m *member) string {
		resp, err := http.Get("http://" + m.adm + "/api/v1/cluster")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var v admin.ClusterView
		if decodeJSON(resp.Body, &v) != nil || len(v.Members) != n {
			return ""
		}
		return v.Leader
	}
	var lead *member
	wait(t, 60*time.Second, "every member up, one leader", func() bool {
		l := leaderOf(ms[0])
		for _, m := range ms {
			if m.id == l {
				lead = m
			}
		}
		return lead != nil
	})
	// Two requests a second on every route of every member.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, m := range ms {
		go trickle(ctx, m.listen, r, 2*r)
	}
	time.Sleep(5 * time.Second)
	cpu := func() (total time.Duration) {
		for _, m := range ms {
			total += procCPU(m.cmd.Process.Pid)
		}
		return total
	}
	in0, out0 := etcdBytes(t, etcd.Endpoints()[0])
	c0, t0 := cpu(), time.Now()
	var lags []float64
	for time.Since(t0) < *flagWindow {
		time.Sleep(time.Second)
		lags = append(lags, metricValues(t, lead.adm, "canaryd_cluster_state_lag_seconds{")...)
	}
	in1, out1 := etcdBytes(t, etcd.Endpoints()[0])
	c1, t1 := cpu(), time.Now()
	secs := t1.Sub(t0).Seconds()
	progressing := count(t, lead.adm, `canaryd_rollout_state{`, `state="progressing"} 1`)
	sort.Float64s(lags)
	if len(lags) == 0 {
		t.Fatal("the leader reported no state lag: no step was taken")
	}
	p50, pmax := lags[len(lags)/2], lags[len(lags)-1]

	// Failover: kill -9 the leader; another leads once its lease runs out.
	cut := time.Now()
	lead.cmd.Process.Signal(syscall.SIGKILL)
	var other *member
	for _, m := range ms {
		if m != lead {
			other = m
			break
		}
	}
	wait(t, 20*time.Second, "another member leads", func() bool {
		resp, err := http.Get("http://" + other.adm + "/api/v1/cluster")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var v admin.ClusterView
		return decodeJSON(resp.Body, &v) == nil && v.Leader != "" && v.Leader != lead.id
	})
	failover := time.Since(cut)
	fmt.Println("\n| members | rollouts | etcd in | etcd out | member CPU | leader's write to last ack p50 / max | rollouts progressing | failover (kill -9) |")
	fmt.Println("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	fmt.Printf("| %d | %d | %s/s | %s/s | %.1f%% | %.0f ms / %.0f ms | %d of %d | %v |\n", n, r, size((in1-in0)/secs), size((out1-out0)/secs),
		100*(c1-c0).Seconds()/secs/float64(n), 1000*p50, 1000*pmax, progressing, r, failover.Round(10*time.Millisecond))
	if pmax > convergenceMax.Seconds()+ackSlack.Seconds() {
		t.Errorf("the last acknowledgement came %.0f ms after the leader's write; want at most %v", 1000*pmax, convergenceMax+ackSlack)
	}
	if failover > failoverMax+time.Second { // +1 s: this test polls the API
		t.Errorf("failover %v; want at most session_ttl + 2 s", failover)
	}
}

// ackSlack: an acknowledgement also waits for the member's write to etcd.
const ackSlack = 500 * time.Millisecond

// metricValues are the values of every series of a metric.
func metricValues(t *testing.T, admin, prefix string) []float64 {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, prefix) {
			if f, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64); err == nil {
				out = append(out, f)
			}
		}
	}
	return out
}

func decodeJSON(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
