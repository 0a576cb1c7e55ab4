package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/evidence"
	"canaryd/internal/etcdtest"
	"canaryd/internal/tcpproxy"
	"canaryd/metrics"
	"canaryd/rollout"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// recorder is a Handler that records what the cluster tells it and
// answers commands from a table.
type recorder struct {
	mu       sync.Mutex
	leading  bool
	states   map[string]string
	settled  map[string][]string
	commands []string
	drift    map[string][]string
	stats    []PoolStats
	cmdErr   error
}

func newRecorder() *recorder {
	return &recorder{states: map[string]string{}, settled: map[string][]string{}, drift: map[string][]string{}}
}

func (r *recorder) Lead()   { r.mu.Lock(); r.leading = true; r.mu.Unlock() }
func (r *recorder) Follow() { r.mu.Lock(); r.leading = false; r.mu.Unlock() }
func (r *recorder) State(route string, data []byte) {
	r.mu.Lock()
	r.states[route] = string(data)
	r.mu.Unlock()
}
func (r *recorder) Approve(string, rollout.Approval) error { return nil }

func (r *recorder) Command(route string, action rollout.Action) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commands = append(r.commands, route+" "+string(action))
	return r.cmdErr
}
func (r *recorder) Drift(route string, members []string) {
	r.mu.Lock()
	r.drift[route] = members
	r.mu.Unlock()
}
func (r *recorder) Settled(route string, late []string) {
	r.mu.Lock()
	r.settled[route] = append([]string{"settled"}, late...)
	r.mu.Unlock()
}
func (r *recorder) Partitioned(bool) {}
func (r *recorder) Stats(route string) []PoolStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []PoolStats
	for _, p := range r.stats {
		if p.Route == route {
			out = append(out, p)
		}
	}
	return out
}

func (r *recorder) read(f func(*recorder) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f(r)
}

func member(t *testing.T, endpoints []string, id string, h Handler, routes map[string]string) *Cluster {
	t.Helper()
	return memberLog(t, endpoints, id, h, routes, nil)
}

func memberLog(t *testing.T, endpoints []string, id string, h Handler, routes map[string]string, log *zap.Logger) *Cluster {
	t.Helper()
	c, err := New(Options{Log: log,
		Config: config.Cluster{Name: "t", Etcd: config.ClusterEtcd{Endpoints: endpoints, DialTimeout: config.Duration(2 * time.Second)},
			SessionTTL: config.Duration(2 * time.Second), PartitionTimeout: config.Duration(30 * time.Second), OnPartition: "stable"},
		Member: id, Handler: h, Metrics: metrics.NewCluster(prometheus.NewRegistry()),
		Info: Info{Addr: id, Routes: routes},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	return c
}

// leakOpts: the etcd processes' own goroutines (output copies and waits)
// live until the test's cleanup, after the leak check.
var leakOpts = []goleak.Option{goleak.IgnoreCurrent(),
	goleak.IgnoreAnyFunction("os/exec.(*Cmd).writerDescriptor.func1"), goleak.IgnoreAnyFunction("canaryd/internal/proctest.Start.func1")}

func eventually(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func counts(req, errs uint64) evidence.Traffic {
	var tr evidence.Traffic
	tr.Weighted.Requests, tr.Weighted.Errors = req, errs
	tr.Weighted.Latency[10] = req
	return tr
}

// Two members on a real three-member etcd: one leads; its state reaches
// the other, which acknowledges it with its counts; the leader sums them;
// commands sent to the follower run on the leader; drift is reported; a
// deposed leader's write is fenced off.
func TestTwoMembers(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts...)
	etcd := etcdtest.Start(t, 3)
	ha, hb := newRecorder(), newRecorder()
	a := member(t, etcd.Endpoints(), "a", ha, map[string]string{"web": "h1"})
	eventually(t, 10*time.Second, "a leads", func() bool { return a.Leading() })
	hb.stats = []PoolStats{{Route: "web", Pool: "green", Traffic: counts(40, 3)}}
	ha.mu.Lock()
	ha.stats = []PoolStats{{Route: "web", Pool: "green", Traffic: counts(10, 1)}}
	ha.mu.Unlock()
	b := member(t, etcd.Endpoints(), "b", hb, map[string]string{"web": "h2"})
	defer b.Close()
	defer a.Close()
	eventually(t, 5*time.Second, "b is a member", func() bool { return len(a.View().Members) == 2 })
	if b.Leading() {
		t.Fatal("two leaders")
	}

	// The leader's write reaches b, which acknowledges it.
	if err := a.SaveState("web", []byte(`{"phase":"progressing","weight_bp":500}`), true); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "b gets the state", func() bool {
		return hb.read(func(r *recorder) bool { return strings.Contains(r.states["web"], `"weight_bp":500`) })
	})
	eventually(t, 3*time.Second, "a hears b's acknowledgement", func() bool {
		return ha.read(func(r *recorder) bool { return len(r.settled["web"]) == 1 })
	})
	// With it came b's counts, as a series from zero: the 40 requests b
	// served before the rollout reached it are no step's evidence. The 25
	// it serves next reach the leader's sum with b's next flush.
	if got := a.Traffic("web", "green", counts(10, 1)); got.Weighted.Requests != 10 {
		t.Fatalf("summed traffic at b's first report = %d requests; want a's own 10", got.Weighted.Requests)
	}
	hb.mu.Lock()
	hb.stats = []PoolStats{{Route: "web", Pool: "green", Traffic: counts(65, 4)}}
	hb.mu.Unlock()
	eventually(t, 3*time.Second, "b's next flush reaches the leader", func() bool {
		return a.Traffic("web", "green", evidence.Traffic{}).Weighted.Requests == 25
	})
	got := a.Traffic("web", "green", counts(10, 1))
	if got.Weighted.Requests != 35 || got.Weighted.Errors != 2 || got.Weighted.Latency[10] != 35 {
		t.Fatalf("summed traffic = %d requests, %d errors, bucket %d; want 35, 2, 35", got.Weighted.Requests, got.Weighted.Errors, got.Weighted.Latency[10])
	}
	if v := b.View(); v.Leader != "a" || v.Members[1].Acked["web"] == 0 {
		t.Fatalf("b's view: %+v", v)
	}
	// Only the leader reads the reports; a follower charts from the
	// leader's chart, read when asked.
	b.mu.Lock()
	nStats, nAcks, nHistory := len(b.cache.stats), len(b.cache.acks), len(b.history)
	b.mu.Unlock()
	if nStats != 0 || nAcks != 0 || nHistory != 0 {
		t.Fatalf("the follower holds %d routes' counts, %d routes' acknowledgements, %d pools' history; want none", nStats, nAcks, nHistory)
	}
	charted := func(c *Cluster) uint64 {
		pts, _ := c.Series("web", "green", 5*time.Minute, 5*time.Second)
		total := uint64(0)
		for _, p := range pts {
			total += p.Requests
		}
		return total
	}
	// The leader's chart has a whole span (the first, partial, is left
	// out), then its own 20 new requests go into the next.
	eventually(t, 15*time.Second, "the leader charts a whole span", func() bool {
		pts, ok := a.Series("web", "green", 5*time.Minute, 5*time.Second)
		return ok && len(pts) > 0
	})
	ha.mu.Lock()
	ha.stats = []PoolStats{{Route: "web", Pool: "green", Traffic: counts(30, 1)}}
	ha.mu.Unlock()
	// (Each chart leaves out its oldest span while it is partial, so the
	// two may differ by the 25 requests of the history's first seconds.)
	eventually(t, 15*time.Second, "b charts the leader's 20 new requests", func() bool {
		n := charted(b)
		return n >= 20 && n <= charted(a)+25
	})

	// A command sent to b runs on a, and its error comes back.
	if err := b.Command(context.Background(), "web", rollout.Pause); err != nil {
		t.Fatal(err)
	}
	ha.mu.Lock()
	ha.cmdErr = errors.New("cannot promote a rollout that is rolled_back")
	ha.mu.Unlock()
	if err := b.Command(context.Background(), "web", rollout.Promote); err == nil || !strings.Contains(err.Error(), "rolled_back") {
		t.Fatalf("command error = %v", err)
	}
	if !ha.read(func(r *recorder) bool { return strings.Join(r.commands, ",") == "web pause,web promote" }) {
		t.Fatalf("commands run on the leader: %v", ha.commands)
	}
	if !hb.read(func(r *recorder) bool { return len(r.commands) == 0 }) {
		t.Fatal("a follower ran a command")
	}

	// b's route settings differ from a's: drift names b.
	eventually(t, 3*time.Second, "drift reported", func() bool {
		return ha.read(func(r *recorder) bool { return strings.Join(r.drift["web"], ",") == "b" })
	})
	b.SetInfo(Info{Addr: "b", Routes: map[string]string{"web": "h1"}})
	eventually(t, 3*time.Second, "drift over", func() bool {
		return ha.read(func(r *recorder) bool { d, ok := r.drift["web"]; return ok && len(d) == 0 })
	})

	// Depose a behind its back: its election key goes (as when its lease
	// expires in a partition). b leads, and a's late write fails.
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	a.mu.Lock()
	lease := a.sess.Lease()
	a.mu.Unlock()
	if _, err := cli.Revoke(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	if err := a.SaveState("web", []byte(`{"phase":"progressing","weight_bp":2500}`), true); !errors.Is(err, ErrFenced) {
		t.Fatalf("deposed leader's write: %v, want ErrFenced", err)
	}
	eventually(t, 5*time.Second, "b leads", func() bool { return b.Leading() })
	eventually(t, 5*time.Second, "a follows", func() bool { return !a.Leading() })
	resp, err := cli.Get(context.Background(), "/canaryd/t/state/web")
	if err != nil || len(resp.Kvs) != 1 || strings.Contains(string(resp.Kvs[0].Value), "2500") {
		t.Fatalf("the deposed write landed: %v %v", resp, err)
	}
	if err := b.SaveState("web", []byte(`{"phase":"progressing","weight_bp":2500}`), true); err != nil {
		t.Fatalf("new leader's write: %v", err)
	}
}

// SIGTERM's path: a leader that resigns is replaced at once, not after
// its session's TTL.
func TestResignHandsOverAtOnce(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts...)
	etcd := etcdtest.Start(t, 1)
	ha, hb := newRecorder(), newRecorder()
	a := member(t, etcd.Endpoints(), "a", ha, nil)
	eventually(t, 10*time.Second, "a leads", func() bool { return a.Leading() })
	b := member(t, etcd.Endpoints(), "b", hb, nil)
	defer b.Close()
	eventually(t, 5*time.Second, "b is a member", func() bool { return len(a.View().Members) == 2 })
	start := time.Now()
	a.Resign()
	eventually(t, time.Second, "b leads within a second", func() bool { return b.Leading() })
	t.Logf("new leader %v after the resignation", time.Since(start).Round(time.Millisecond))
	a.Close()
	if ha.read(func(r *recorder) bool { return r.leading }) {
		t.Fatal("a's handler still leads")
	}
}

// The sums never go back: a member that leaves (its flush expires with
// its lease) or starts a new series keeps its old counts in the sum.
func TestSumsAreMonotonic(t *testing.T) {
	m := newCache("self")
	doc := func(series string, req uint64) statsDoc {
		return encodeStats(series, []PoolStats{{Route: "web", Pool: "green", Traffic: counts(req, 0)}}, nil)
	}
	m.stats["web"] = map[string]statsDoc{"b": doc("1.1", 100), "self": doc("x.1", 1000)} // self's are counted live, never here
	if got := m.sum("self", "web", "green").Traffic.Weighted.Requests; got != 100 {
		t.Fatalf("sum = %d, want 100", got)
	}
	m.del("/p/", "/p/counts/web/b") // b's lease expired
	m.del("/p/", "/p/counts/web/self")
	if got := m.sum("self", "web", "green").Traffic.Weighted.Requests; got != 100 {
		t.Fatalf("after b left, sum = %d, want 100", got)
	}
	put := func(key string, d statsDoc) {
		b, _ := json.Marshal(d)
		m.put("/p/", &mvccpb.KeyValue{Key: []byte(key), Value: b})
	}
	put("/p/counts/web/b", doc("2.1", 7)) // b again, a new boot: a new series
	if got := m.sum("self", "web", "green").Traffic.Weighted.Requests; got != 107 {
		t.Fatalf("after b's reboot, sum = %d, want 107", got)
	}
	put("/p/counts/web/b", doc("2.1", 9)) // the same series, further on
	put("/p/counts/web/b", doc("2.2", 3)) // a later rollout: another series
	if got := m.sum("self", "web", "green").Traffic.Weighted.Requests; got != 112 {
		t.Fatalf("after b's next series, sum = %d, want 112", got)
	}
	// A read of the reports that lacks b's series retires it too.
	m.loadReports("/p/", nil)
	if got := m.sum("self", "web", "green").Traffic.Weighted.Requests; got != 112 {
		t.Fatalf("after a read without b, sum = %d, want 112", got)
	}
	if got := m.sum("self", "api", "green").Traffic.Weighted.Requests; got != 0 {
		t.Fatalf("another route's sum = %d, want 0", got)
	}
}

// A member whose watch falls behind a compaction (cut off while the
// leader wrote and etcd compacted) reads the keys again and serves the
// latest state.
func TestCompactedWatchRereads(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts...)
	etcd := etcdtest.Start(t, 1)
	link := tcpproxy.Start(t, etcd.Endpoints()...)
	defer link.Close()
	ha, hb := newRecorder(), newRecorder()
	a := member(t, etcd.Endpoints(), "a", ha, nil)
	defer a.Close()
	eventually(t, 10*time.Second, "a leads", func() bool { return a.Leading() })
	core, logs := observer.New(zap.InfoLevel)
	b := memberLog(t, []string{link.Addr()}, "b", hb, nil, zap.New(core))
	defer b.Close()
	if err := a.SaveState("web", []byte(`{"weight_bp":100}`), false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "b gets the first state", func() bool {
		return hb.read(func(r *recorder) bool { return strings.Contains(r.states["web"], `100`) })
	})
	link.Block()
	for _, w := range []string{"200", "300", "400"} {
		if err := a.SaveState("web", []byte(`{"weight_bp":`+w+`}`), false); err != nil {
			t.Fatal(err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "/canaryd/t/state/web")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(context.Background(), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	link.Unblock()
	eventually(t, 15*time.Second, "b gets the latest state", func() bool {
		return hb.read(func(r *recorder) bool { return strings.Contains(r.states["web"], `400`) })
	})
	if logs.FilterMessageSnippet("compacted").Len() == 0 {
		t.Error("b did not log the compaction: the test did not take the path it is about")
	}
}

// boomHandler panics where told: in State (the watch), Command (the
// leader's duties).
type boomHandler struct {
	*recorder
	state, command bool
}

func (b boomHandler) State(route string, data []byte) {
	if b.state {
		panic("injected")
	}
	b.recorder.State(route, data)
}

func (b boomHandler) Approve(string, rollout.Approval) error { return nil }

func (b boomHandler) Command(route string, action rollout.Action) error {
	if b.command {
		panic("injected")
	}
	return b.recorder.Command(route, action)
}

// A panic in a member's watch and in the leader's duties reaches the
// panic handler.
func TestPanicsOfClusterLoopsReachTheHandler(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts...)
	etcd := etcdtest.Start(t, 1)
	var mu sync.Mutex
	got := map[string]bool{}
	onPanic := func(component string, _ any, _ []byte) { mu.Lock(); got[component] = true; mu.Unlock() }
	start := func(id string, h Handler) *Cluster {
		c, err := New(Options{
			Config: config.Cluster{Name: "p", Etcd: config.ClusterEtcd{Endpoints: etcd.Endpoints(), DialTimeout: config.Duration(2 * time.Second)},
				SessionTTL: config.Duration(2 * time.Second), PartitionTimeout: config.Duration(30 * time.Second), OnPartition: "stable"},
			Member: id, Handler: h, Metrics: metrics.NewCluster(prometheus.NewRegistry()), OnPanic: onPanic,
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Start()
		return c
	}
	a := start("a", boomHandler{recorder: newRecorder(), command: true})
	defer a.Close()
	eventually(t, 10*time.Second, "a leads", func() bool { return a.Leading() })
	b := start("b", boomHandler{recorder: newRecorder(), state: true})
	defer b.Close()
	eventually(t, 5*time.Second, "b is a member", func() bool { return len(a.View().Members) == 2 })
	if err := a.SaveState("web", []byte(`{"phase":"progressing"}`), false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	b.Command(ctx, "web", rollout.Pause) // a's duties panic running it: b's wait times out
	has := func(c string) bool { mu.Lock(); defer mu.Unlock(); return got[c] }
	eventually(t, 5*time.Second, "both panics handled", func() bool { return has("cluster watch") && has("cluster duties") })
}
