package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"canaryd/admin"
	"canaryd/adminclient"
	"canaryd/internal/etcdtest"
	"canaryd/internal/tcpproxy"
	"canaryd/rollout"

	"github.com/chromedp/chromedp"
)

// A cluster on one machine: three real etcd members, three canaryd
// processes each reaching etcd through its own TCP proxy (cut it to
// partition that member), and a TCP forwarder standing for the L4
// balancer in front of them.
type testCluster struct {
	etcd    *etcdtest.Cluster
	name    string
	members []*clusterMember
	blue    string
	green   string
}

type clusterMember struct {
	id   string
	link *tcpproxy.Proxy // this member's way to etcd
	cfg  string
	run  *canaryRun
}

// clusterConfig is a member's config: the shared routes and its own
// listeners, state_dir and member id.
func (tc *testCluster) clusterConfig(t *testing.T, id, link, extra, rolloutBlock string) string {
	return fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
state_dir: %q
reload: { debounce: 50ms }
cluster:
  name: %s
  member: %s
  etcd: { endpoints: [%q] }
  session_ttl: 2s
%s
routes:
%s`, t.TempDir(), tc.name, id, link, extra, webRoute(tc.blue, tc.green, rolloutBlock))
}

func startCluster(t *testing.T, greenArgs []string, extra, rolloutBlock string) *testCluster {
	t.Helper()
	long(t)
	tc := &testCluster{etcd: etcdtest.Start(t, 3), name: fmt.Sprintf("e2e%d", rand.IntN(1e9))}
	tc.blue, tc.green = backendProc(t, "blue"), backendProc(t, "green", greenArgs...)
	for i := 0; i < 3; i++ {
		m := &clusterMember{id: fmt.Sprintf("m%d", i), link: tcpproxy.Start(t, tc.etcd.Endpoints()...)}
		m.cfg = writeConfig(t, tc.clusterConfig(t, m.id, m.link.Addr(), extra, rolloutBlock))
		m.run = startCanaryd(t, m.cfg)
		tc.members = append(tc.members, m)
	}
	return tc
}

func clusterView(t *testing.T, adminAddr string) (admin.ClusterView, error) {
	t.Helper()
	return adminclient.New(adminAddr, "").Cluster()
}

// leader waits until the given members agree on a leader among them and
// returns it.
func (tc *testCluster) leader(t *testing.T, within time.Duration, among ...*clusterMember) *clusterMember {
	t.Helper()
	if len(among) == 0 {
		among = tc.members
	}
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		agreed := ""
		for _, m := range among {
			v, err := clusterView(t, m.run.admin)
			if err != nil || v.Leader == "" || (agreed != "" && v.Leader != agreed) {
				agreed = "-"
				break
			}
			agreed = v.Leader
		}
		for _, m := range among {
			if m.id == agreed {
				return m
			}
		}
	}
	t.Fatalf("no leader agreed among %d members within %v", len(among), within)
	return nil
}

func (tc *testCluster) others(than ...*clusterMember) []*clusterMember {
	var out []*clusterMember
next:
	for _, m := range tc.members {
		for _, o := range than {
			if m == o {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// greenWeight is the canary's weight a member serves, from its live table.
func greenWeight(t *testing.T, adminAddr string) (float64, error) {
	rv, err := adminclient.New(adminAddr, "").Route("web")
	if err != nil {
		return 0, err
	}
	for _, p := range rv.Pools {
		if p.Name == "green" {
			return p.Weight, nil
		}
	}
	return 0, fmt.Errorf("no pool green")
}

func balancerOver(t *testing.T, ms []*clusterMember) *tcpproxy.Proxy {
	var addrs []string
	for _, m := range ms {
		addrs = append(addrs, strings.TrimPrefix(m.run.proxy, "http://"))
	}
	return tcpproxy.Start(t, addrs...)
}

// Traffic sent only through the followers promotes a healthy canary: the
// leader judges the sum of their counts (it serves none itself). Every
// weight the leader decides is served by all members within a second.
func TestClusterFollowersTrafficPromotes(t *testing.T) {
	tc := startCluster(t, nil, "", `{ steps: [10, 50, 100], interval: 1s, min_requests: 30,
       analysis: { max_error_rate: 0.05, max_latency_p99: 1s, compare_to_stable: { min_latency_difference: 100ms } } }`)
	lead := tc.leader(t, 15*time.Second)
	followers := tc.others(lead)
	lb := balancerOver(t, followers)
	g := startLoad("http://"+lb.Addr()+"/", 4, nil)
	defer g.halt()

	// Watch every member's served weight; note when each first serves a
	// new value.
	firstSeen := map[float64]map[string]time.Time{}
	deadline := time.Now().Add(90 * time.Second)
	leaderCharted := false
	for done := false; !done && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		done = true
		// The leader serves no request, yet its charts show the cluster's
		// traffic while the rollout is under way.
		if !leaderCharted && firstSeen[10] != nil {
			var series map[string][]admin.Point
			if resp, err := http.Get("http://" + lead.run.admin + "/api/v1/routes/web/series?last=1m&step=1s"); err == nil {
				json.NewDecoder(resp.Body).Decode(&series)
				resp.Body.Close()
			}
			for _, pt := range series["blue"] {
				leaderCharted = leaderCharted || pt.RPS > 10
			}
		}
		for _, m := range tc.members {
			w, err := greenWeight(t, m.run.admin)
			if err != nil {
				t.Fatal(err)
			}
			if firstSeen[w] == nil {
				firstSeen[w] = map[string]time.Time{}
			}
			if _, ok := firstSeen[w][m.id]; !ok {
				firstSeen[w][m.id] = time.Now()
			}
			if w != 100 {
				done = false
			}
		}
	}
	for _, w := range []float64{10, 50, 100} {
		seen := firstSeen[w]
		if len(seen) != 3 {
			t.Fatalf("canary weight %v served by %d members (%v); all weights seen: %v", w, len(seen), seen, firstSeen)
		}
		lo, hi := time.Time{}, time.Time{}
		for _, at := range seen {
			if lo.IsZero() || at.Before(lo) {
				lo = at
			}
			if at.After(hi) {
				hi = at
			}
		}
		t.Logf("canary %v%%: all members serve it within %v of the first", w, hi.Sub(lo).Round(time.Millisecond))
		if hi.Sub(lo) > time.Second {
			t.Errorf("canary %v%%: members converged in %v, over 1s", w, hi.Sub(lo))
		}
	}
	if !leaderCharted {
		t.Error("the leader's charts never showed the followers' traffic")
	}
	// Every member tells the same story.
	for _, m := range tc.members {
		if st := m.run.status(t, "web"); st.Phase != rollout.Promoted {
			t.Errorf("member %s: %s (%s)", m.id, st.Phase, st.Reason)
		}
	}
	v, err := clusterView(t, lead.run.admin)
	if err != nil || len(v.Members) != 3 || v.Leader != lead.id || !v.Connected {
		t.Fatalf("cluster view: %+v %v", v, err)
	}
	if g.failed.Load() != 0 {
		t.Errorf("%d of %d requests failed", g.failed.Load(), g.total.Load())
	}
	// The metrics say who leads.
	if scrapeGauge(t, lead.run.admin, "canaryd_cluster_leader") != 1 || scrapeGauge(t, followers[0].run.admin, "canaryd_cluster_leader") != 0 ||
		scrapeGauge(t, followers[0].run.admin, "canaryd_cluster_members") != 3 || scrapeGauge(t, followers[0].run.admin, "canaryd_cluster_connected") != 1 {
		t.Error("cluster metrics do not match the cluster")
	}
}

// A failing canary whose traffic all goes through the followers is rolled
// back by the leader's tripwire, on every member.
func TestClusterFollowersTrafficRollsBack(t *testing.T) {
	tc := startCluster(t, []string{"--error-rate", "1"}, "",
		`{ steps: [20, 100], interval: 1m, min_requests: 1000, tripwire: { window: 5s, min_requests: 20, max_error_rate: 0.5 } }`)
	lead := tc.leader(t, 15*time.Second)
	lb := balancerOver(t, tc.others(lead))
	g := startLoad("http://"+lb.Addr()+"/", 4, nil)
	defer g.halt()
	start := time.Now()
	for _, m := range tc.members {
		st := m.run.waitPhase(t, "web", rollout.RolledBack, 30*time.Second)
		if !strings.HasPrefix(st.Reason, "tripwire") {
			t.Errorf("member %s rolled back for %q", m.id, st.Reason)
		}
	}
	t.Logf("rolled back on every member %v after the load began", time.Since(start).Round(time.Millisecond))
	for _, m := range tc.members {
		if w, _ := greenWeight(t, m.run.admin); w != 0 {
			t.Errorf("member %s still sends %v%% to the canary", m.id, w)
		}
	}
}

// kill -9 the leader in the middle of a step: another member leads
// within session_ttl + 2s and resumes the same step; the weights served
// never move meanwhile.
func TestClusterLeaderKilled(t *testing.T) {
	tc := startCluster(t, nil, "", `{ steps: [10, 50, 100], interval: 1m, min_requests: 30 }`)
	lead := tc.leader(t, 15*time.Second)
	for _, m := range tc.members {
		waitWeight(t, m, 10, 5*time.Second)
	}
	rest := tc.others(lead)
	lb := balancerOver(t, rest)
	g := startLoad("http://"+lb.Addr()+"/", 4, nil)
	defer g.halt()
	killed := time.Now()
	lead.run.p.cmd.Process.Kill()
	var next *clusterMember
	for next == nil && time.Since(killed) < 10*time.Second {
		for _, m := range rest {
			if w, err := greenWeight(t, m.run.admin); err != nil || w != 10 {
				t.Fatalf("member %s serves canary %v%% (%v) during the failover", m.id, w, err)
			}
		}
		if v, err := clusterView(t, rest[0].run.admin); err == nil && v.Leader != "" && v.Leader != lead.id {
			for _, m := range rest {
				if m.id == v.Leader {
					next = m
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(killed)
	if next == nil || took > 2*time.Second+2*time.Second {
		t.Fatalf("new leader %v after %v; want one within session_ttl + 2s", next, took)
	}
	t.Logf("after kill -9 of leader %s, %s leads after %v", lead.id, next.id, took.Round(time.Millisecond))
	// The election key names the new leader a moment before that member
	// has taken the rollouts over (it reads their state first): the
	// status says "resumed" within a second of it.
	st := next.run.status(t, "web")
	for end := time.Now().Add(2 * time.Second); !strings.Contains(st.Reason, "resumed by new leader "+next.id) && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		st = next.run.status(t, "web")
	}
	if st.Phase != rollout.Progressing || st.Step != 1 || !strings.Contains(st.Reason, "resumed by new leader "+next.id) {
		t.Errorf("after the failover: %s step %d (%s)", st.Phase, st.Step, st.Reason)
	}
	for _, m := range rest {
		if w, _ := greenWeight(t, m.run.admin); w != 10 {
			t.Errorf("member %s serves %v%% after the failover", m.id, w)
		}
	}
	if g.failed.Load() != 0 {
		t.Errorf("%d of %d requests through the survivors failed", g.failed.Load(), g.total.Load())
	}
}

func waitWeight(t *testing.T, m *clusterMember, want float64, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var w float64
	var err error
	for time.Since(start) < within {
		if w, err = greenWeight(t, m.run.admin); err == nil && w == want {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("member %s serves canary %v%% (%v), not %v%%, after %v", m.id, w, err, want, within)
	return 0
}

// SIGTERM on the leader: it resigns before it drains, so another member
// leads within a second; no client request through the balancer fails.
func TestClusterLeaderSIGTERM(t *testing.T) {
	tc := startCluster(t, nil, "", `{ steps: [10, 50, 100], interval: 1m, min_requests: 30 }`)
	lead := tc.leader(t, 15*time.Second)
	for _, m := range tc.members {
		waitWeight(t, m, 10, 5*time.Second)
	}
	lb := balancerOver(t, tc.members)
	g := startLoad("http://"+lb.Addr()+"/", 4, nil)
	time.Sleep(500 * time.Millisecond)
	rest := tc.others(lead)
	signalled := time.Now()
	lead.run.p.cmd.Process.Signal(syscall.SIGTERM)
	next := tc.leader(t, 5*time.Second, rest...)
	took := time.Since(signalled)
	t.Logf("after SIGTERM to leader %s, %s leads after %v", lead.id, next.id, took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("new leader after %v, want under 1s", took)
	}
	lead.run.p.wait(t, 15*time.Second)
	time.Sleep(500 * time.Millisecond)
	g.halt()
	if g.failed.Load() != 0 {
		t.Errorf("%d of %d requests through the balancer failed across the failover", g.failed.Load(), g.total.Load())
	}
	t.Logf("%d requests through the balancer, none failed", g.total.Load())
	if st := next.run.status(t, "web"); st.Phase != rollout.Progressing || st.Step != 1 {
		t.Errorf("after the handover: %s step %d (%s)", st.Phase, st.Step, st.Reason)
	}
}

// A follower cut off from etcd keeps its last weights, says so in its
// metrics, and after partition_timeout sends the progressing route to
// stable; back in touch, it serves the cluster's weights again.
func TestClusterPartitionedFollower(t *testing.T) {
	tc := startCluster(t, nil, "  partition_timeout: 4s", `{ steps: [10, 50, 100], interval: 1m, min_requests: 30 }`)
	lead := tc.leader(t, 15*time.Second)
	f := tc.others(lead)[0]
	waitWeight(t, f, 10, 5*time.Second)
	cut := time.Now()
	f.link.Block()
	for time.Since(cut) < 3*time.Second {
		if w, _ := greenWeight(t, f.run.admin); w != 10 {
			t.Fatalf("partitioned member moved to %v%% after %v, before partition_timeout", w, time.Since(cut))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if scrapeGauge(t, f.run.admin, "canaryd_cluster_connected") != 0 {
		t.Error("canaryd_cluster_connected is not 0 on the partitioned member")
	}
	if resp, err := http.Get("http://" + f.run.admin + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("readiness of the partitioned member: %v %v", resp, err)
	}
	took := waitWeight(t, f, 0, 5*time.Second) + 3*time.Second
	t.Logf("partitioned member went to stable %v after the cut (partition_timeout 4s)", took.Round(100*time.Millisecond))
	// The rest of the cluster is unmoved.
	if w, _ := greenWeight(t, lead.run.admin); w != 10 {
		t.Errorf("leader serves %v%%", w)
	}
	f.link.Unblock()
	back := waitWeight(t, f, 10, 10*time.Second)
	t.Logf("back in touch: the cluster's 10%% again after %v", back.Round(10*time.Millisecond))
	// Cut off again, it still stops promptly on SIGTERM: nothing waits
	// for etcd.
	f.link.Block()
	time.Sleep(time.Second)
	stopAt := time.Now()
	f.run.p.cmd.Process.Signal(syscall.SIGTERM)
	if err := f.run.p.wait(t, 15*time.Second); err != nil {
		t.Errorf("exit after SIGTERM while partitioned: %v", err)
	}
	t.Logf("a partitioned member stopped %v after SIGTERM", time.Since(stopAt).Round(10*time.Millisecond))
}

// Two of three etcd members stopped: no quorum, nothing advances, traffic
// keeps flowing; with the quorum back, the rollout goes on to the end.
func TestClusterQuorumLoss(t *testing.T) {
	tc := startCluster(t, nil, "", `{ steps: [10, 50, 100], interval: 1s, min_requests: 20,
       analysis: { max_error_rate: 0.05, max_latency_p99: 1s, compare_to_stable: { min_latency_difference: 100ms } } }`)
	tc.leader(t, 15*time.Second)
	for _, m := range tc.members {
		waitWeight(t, m, 10, 5*time.Second)
	}
	tc.etcd.Members[1].Stop()
	tc.etcd.Members[2].Stop()
	lb := balancerOver(t, tc.members)
	g := startLoad("http://"+lb.Addr()+"/", 4, nil)
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, m := range tc.members {
			if w, _ := greenWeight(t, m.run.admin); w != 10 {
				t.Fatalf("member %s moved to %v%% without a quorum", m.id, w)
			}
		}
	}
	if g.failed.Load() != 0 || g.total.Load() < 100 {
		t.Errorf("without a quorum: %d of %d requests failed", g.failed.Load(), g.total.Load())
	}
	t.Logf("8s without a quorum: %d requests served, the weights unmoved", g.total.Load())
	tc.etcd.Members[1].Start(t)
	tc.etcd.Members[2].Start(t)
	for _, m := range tc.members {
		waitWeight(t, m, 100, 60*time.Second)
	}
	g.halt()
}

// Members whose config of the route differs: the leader pauses the
// rollout and names them; once the files agree, it resumes by itself.
func TestClusterConfigDriftPauses(t *testing.T) {
	block := `{ steps: [10, 50, 100], interval: 1m, min_requests: 30 }`
	tc := startCluster(t, nil, "", block)
	lead := tc.leader(t, 15*time.Second)
	odd := tc.others(lead)[1]
	waitWeight(t, odd, 10, 5*time.Second)
	good, err := os.ReadFile(odd.cfg)
	if err != nil {
		t.Fatal(err)
	}
	drifted := strings.Replace(string(good), "min_requests: 30", "min_requests: 31", 1)
	if err := os.WriteFile(odd.cfg, []byte(drifted), 0o644); err != nil {
		t.Fatal(err)
	}
	st := lead.run.waitPhase(t, "web", rollout.Paused, 10*time.Second)
	if !strings.Contains(st.Reason, odd.id) || !strings.Contains(st.Reason, "differs") {
		t.Errorf("drift pause reason: %q", st.Reason)
	}
	if ost := odd.run.waitPhase(t, "web", rollout.Paused, 5*time.Second); ost.Reason != st.Reason {
		t.Errorf("the drifted member tells %q", ost.Reason)
	}
	if err := os.WriteFile(odd.cfg, good, 0o644); err != nil {
		t.Fatal(err)
	}
	st = lead.run.waitPhase(t, "web", rollout.Progressing, 10*time.Second)
	if !strings.Contains(st.Reason, "same config") {
		t.Errorf("after the fix: %q", st.Reason)
	}
}

// Operator commands sent to a follower run on the leader; each event's
// webhook is sent once, by the leader; the CLI's status shows the cluster.
func TestClusterCommandsOnAnyMember(t *testing.T) {
	var mu sync.Mutex
	var events []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e struct{ To, Reason string }
		json.NewDecoder(r.Body).Decode(&e)
		mu.Lock()
		events = append(events, e.To+": "+e.Reason)
		mu.Unlock()
	}))
	defer hook.Close()
	var slackN atomic.Int32
	slack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p struct{ Text string }
		if json.NewDecoder(r.Body).Decode(&p) == nil && p.Text != "" {
			slackN.Add(1)
		}
	}))
	defer slack.Close()
	tc := startCluster(t, nil, "", `{ steps: [10, 50, 100], interval: 1m, min_requests: 30, webhook: { url: "`+hook.URL+`" },
       notify: [ { url: "`+slack.URL+`", format: slack, labels: { env: e2e } } ] }`)
	lead := tc.leader(t, 15*time.Second)
	f := tc.others(lead)[0]
	waitWeight(t, f, 10, 5*time.Second)
	out, err := runCLI(t, "promote", "web", "--admin", f.run.admin)
	if err != nil {
		t.Fatalf("promote on a follower: %v\n%s", err, out)
	}
	for _, m := range tc.members {
		waitWeight(t, m, 100, 3*time.Second)
		if st := m.run.status(t, "web"); st.Phase != rollout.Promoted {
			t.Errorf("member %s: %s", m.id, st.Phase)
		}
	}
	// A command the state refuses gets the leader's answer.
	if out, err := runCLI(t, "pause", "web", "--admin", f.run.admin); err == nil || !strings.Contains(out, "cannot pause a rollout that is promoted") {
		t.Errorf("pause of a promoted rollout on a follower: %v\n%s", err, out)
	}
	time.Sleep(time.Second)
	mu.Lock()
	got := strings.Join(events, "\n")
	mu.Unlock()
	if strings.Count(got, "progressing: new release") != 1 || strings.Count(got, "promoted: promoted by operator") != 1 || len(events) != 2 {
		t.Errorf("webhooks received (want each event once):\n%s", got)
	}
	if n := slackN.Load(); n != 2 {
		t.Errorf("slack messages received: %d; want each event once (2)", n)
	}
	out, err = runCLI(t, "status", "--admin", f.run.admin)
	if err != nil || !strings.Contains(out, "cluster "+tc.name) || !strings.Contains(out, "leader "+lead.id) {
		t.Errorf("canaryd status on a follower:\n%s", out)
	}
}

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(binary, args...).CombinedOutput()
	return string(out), err
}

// A follower's dashboard shows the cluster: the leader, every member and
// whether each serves the latest state; a button pressed there reaches
// the leader.
func TestClusterDashboard(t *testing.T) {
	chromium := tool(t, "chromium", "CANARYD_REQUIRE_CHROMIUM")
	tc := startCluster(t, nil, "", `{ steps: [10, 50, 100], interval: 1m, min_requests: 30 }`)
	lead := tc.leader(t, 15*time.Second)
	f := tc.others(lead)[0]
	waitWeight(t, f, 10, 5*time.Second)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1300, 1100))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	defer cancelT()
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+f.run.admin+"/"), chromedp.WaitVisible(`#cluster table`),
		chromedp.WaitVisible(`button[data-action="pause"]`)); err != nil {
		t.Fatalf("browser: %v", err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(`#cluster`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cluster " + tc.name, "leader " + lead.id, "connected", "3 members", f.id + " (this one)", "web current"} {
		if !strings.Contains(text, want) {
			t.Errorf("cluster panel lacks %q:\n%s", want, text)
		}
	}
	dir := os.Getenv("CANARYD_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		os.WriteFile(filepath.Join(dir, "dashboard-cluster.png"), png, 0o644)
	}
	if err := chromedp.Do(ctx, chromedp.Click(`button[data-action="pause"]`), chromedp.WaitVisible(`[data-phase="web"].paused`)); err != nil {
		t.Fatalf("browser, pause on a follower: %v", err)
	}
	if st := lead.run.waitPhase(t, "web", rollout.Paused, 3*time.Second); st.Reason != "paused by operator" {
		t.Errorf("leader after the follower's button: %s", st.Reason)
	}
}

// Weights set by hand would hold on one member only: in a cluster the
// API refuses them and says what to do instead.
func TestClusterRefusesManualWeights(t *testing.T) {
	tc := startCluster(t, nil, "", `{ steps: [10, 50, 100], interval: 1m, min_requests: 30 }`)
	out, err := runCLI(t, "weight", "web", "blue=50", "green=50", "--admin", tc.members[0].run.admin)
	if err == nil || !strings.Contains(out, "this member only") || !strings.Contains(out, "config file of every member") {
		t.Errorf("canaryd weight on a cluster member: %v\n%s", err, out)
	}
}

// In a cluster only the leader calls gates, once per point (not once per
// member); an approval given on a follower reaches the leader.
func TestClusterGatesAndApprovals(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ At string }
		json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		calls = append(calls, req.At)
		mu.Unlock()
	}))
	defer gate.Close()
	tc := startCluster(t, nil, "", `{ steps: [10, 100], interval: 500ms, min_requests: 30,
       gates: [ { name: smoke, at: pre_traffic, url: "`+gate.URL+`" }, { name: sign-off, kind: approval, at: pre_promotion } ] }`)
	lead := tc.leader(t, 15*time.Second)
	f := tc.others(lead)[0]
	lb := balancerOver(t, tc.members)
	g := startLoad("http://"+lb.Addr()+"/", 3, nil)
	defer g.halt()
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st := f.run.status(t, "web")
		if st.Gate != nil && strings.Join(st.Gate.Pending, ",") == "sign-off" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the follower never showed the pending approval: %s at %v%%: %s", st.Phase, st.CanaryWeight, st.Reason)
		}
	}
	out, err := runCLI(t, "approve", "web", "--by", "dana", "--reason", "on call agrees", "--admin", f.run.admin)
	if err != nil {
		t.Fatalf("approve on a follower: %v\n%s", err, out)
	}
	for _, m := range tc.members {
		waitWeight(t, m, 100, 5*time.Second)
	}
	st := lead.run.status(t, "web")
	last := st.History[len(st.History)-1]
	if st.Phase != rollout.Promoted || last.Approval == nil || last.Approval.By != "dana" || last.Approval.Source != rollout.SourceCLI {
		t.Errorf("leader: %s, last event %+v (approval %+v)", st.Phase, last, last.Approval)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(calls, ",") != "pre_traffic" {
		t.Errorf("gate calls %v; want the pre_traffic gate called once, by the leader", calls)
	}
}

// A rollback's close_streams_after ends the canary's streams on every
// member, not only on the leader: each member serves its own clients.
func TestClusterRollbackClosesStreamsOnEveryMember(t *testing.T) {
	long(t)
	tc := &testCluster{etcd: etcdtest.Start(t, 3), name: fmt.Sprintf("e2e%d", rand.IntN(1e9))}
	tc.blue, tc.green = streamServer(t, "blue"), streamServer(t, "green")
	for i := 0; i < 3; i++ {
		m := &clusterMember{id: fmt.Sprintf("m%d", i), link: tcpproxy.Start(t, tc.etcd.Endpoints()...)}
		m.cfg = writeConfig(t, tc.clusterConfig(t, m.id, m.link.Addr(), "", `{ steps: [50, 100], interval: 1h, rollback: { close_streams_after: 1s } }`))
		m.run = startCanaryd(t, m.cfg)
		tc.members = append(tc.members, m)
	}
	lead := tc.leader(t, 15*time.Second)
	var ends []<-chan struct{}
	for _, m := range tc.members {
		waitWeight(t, m, 50, 10*time.Second)
		ends = append(ends, rawStream(t, strings.TrimPrefix(m.run.proxy, "http://"), "green", false))
	}
	if out, err := runCLI(t, "abort", "web", "--admin", tc.others(lead)[0].run.admin); err != nil {
		t.Fatalf("abort on a follower: %v\n%s", err, out)
	}
	for i, end := range ends {
		select {
		case <-end:
		case <-time.After(15 * time.Second):
			t.Errorf("member %s: the canary's event stream is still open 15s after the rollback", tc.members[i].id)
		}
	}
}
