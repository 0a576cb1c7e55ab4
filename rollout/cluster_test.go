package rollout

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"canaryd/config"
	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

// memStore is a Store in memory whose writes can be fenced off, as a
// deposed leader's are.
type memStore struct {
	mu     sync.Mutex
	states map[string]State
	fenced bool
}

func (s *memStore) Load(route string) (*State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.states[route]; ok {
		return &st, nil
	}
	return nil, nil
}

func (s *memStore) Save(st *State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fenced {
		return ErrNotLeader
	}
	s.states[st.Route] = *st
	return nil
}

func (s *memStore) Remove(route string) error { return nil }

// sinkRec records the overrides pushed.
type sinkRec struct {
	mu   sync.Mutex
	last map[string]Override
}

func (s *sinkRec) SetOverride(route string, o Override) {
	s.mu.Lock()
	s.last[route] = o
	s.mu.Unlock()
}

func (s *sinkRec) get(route string) (Override, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.last[route]
	return o, ok
}

// A clustered manager follows until it leads: it shows and serves the
// leader's states, decides nothing, refuses commands; leading, it resumes
// the cluster's state; a fenced write is not served; drift pauses and its
// end resumes.
func TestClusteredManager(t *testing.T) {
	store, sink := &memStore{states: map[string]State{}}, &sinkRec{last: map[string]Override{}}
	m := NewManager(Deps{Counters: newSim(), Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()),
		Store: store, Sink: sink, Clustered: true})
	defer m.Close()
	cfg, err := config.Parse("c.yaml", []byte(`routes:
  - name: web
    rollout: { stable: blue, canary: green, steps: [10, 50, 100], interval: 1h }
    pools:
      - { name: blue, weight: 100, instances: ["127.0.0.1:1"] }
      - { name: green, weight: 0, instances: ["127.0.0.1:2"] }
`))
	if err != nil {
		t.Fatal(err)
	}
	if o := m.Sync(cfg.Routes); len(o) != 0 {
		t.Fatalf("a follower without the cluster's state imposes %v", o)
	}
	m.Start()
	if st, _ := m.Status("web"); st.Phase != Idle || !strings.Contains(st.Reason, "waiting for the cluster's leader") {
		t.Fatalf("follower before any state: %s (%s)", st.Phase, st.Reason)
	}
	release := Release(&cfg.Routes[0])

	// The leader's state: served and shown.
	leaders := State{Route: "web", Release: release, Strategy: "canary", Stable: "blue", Canary: "green", Phase: Progressing, StepIndex: 1, Weight: 5000, Reason: "analysis passed; canary to 50%"}
	m.Adopt(leaders)
	if o, _ := sink.get("web"); o.CanaryBP != 5000 || !o.UnderWay {
		t.Fatalf("adopted override %+v", o)
	}
	if st, _ := m.Status("web"); st.Phase != Progressing || st.Step != 2 {
		t.Fatalf("follower's status: %+v", st)
	}
	// Of another release (this member's config differs): not served.
	m.Adopt(State{Route: "web", Release: "other", Phase: Progressing, Weight: 10000})
	if o, _ := sink.get("web"); o.CanaryBP != 5000 {
		t.Fatalf("a state of another release was served: %+v", o)
	}
	if _, err := m.Control("web", "promote"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("a follower ran a command: %v", err)
	}

	// Leading: the same step resumes from the cluster's state.
	store.states["web"] = leaders
	m.Lead("m1")
	st, _ := m.Status("web")
	if st.Phase != Progressing || st.Step != 2 || !strings.Contains(st.Reason, "resumed by new leader m1 at step 2") {
		t.Fatalf("new leader: %s step %d (%s)", st.Phase, st.Step, st.Reason)
	}
	if saved := store.states["web"]; !strings.Contains(saved.Reason, "resumed by new leader") {
		t.Errorf("the resumption was not saved: %q", saved.Reason)
	}
	m.Adopt(State{Route: "web", Release: release, Phase: RolledBack}) // the leader ignores states
	if st, _ := m.Status("web"); st.Phase != Progressing {
		t.Fatalf("the leader adopted a state: %s", st.Phase)
	}

	// Drift pauses, naming the members; agreement resumes.
	m.Drift("web", []string{"m2", "m3"})
	if st, _ := m.Status("web"); st.Phase != Paused || !strings.Contains(st.Reason, "differs on members m2, m3") {
		t.Fatalf("drift: %s (%s)", st.Phase, st.Reason)
	}
	m.Drift("web", nil)
	if st, _ := m.Status("web"); st.Phase != Progressing || !strings.Contains(st.Reason, "same config") {
		t.Fatalf("after drift: %s (%s)", st.Phase, st.Reason)
	}

	// Deposed: the promotion's write is fenced off, and its weight is not
	// served. An abort (toward stable) is served at once all the same.
	store.mu.Lock()
	store.fenced = true
	store.mu.Unlock()
	if _, err := m.Control("web", "promote"); err != nil {
		t.Fatal(err)
	}
	if o, _ := sink.get("web"); o.CanaryBP != 5000 {
		t.Fatalf("a fenced-off promotion was served: %+v", o)
	}
	if st, _ := m.Status("web"); st.Phase != Progressing || st.Step != 2 {
		t.Fatalf("after a fenced-off promotion the state shows %s step %d, not the cluster's", st.Phase, st.Step)
	}
	if _, err := m.Control("web", "abort"); err != nil {
		t.Fatal(err)
	}
	if o, _ := sink.get("web"); o.CanaryBP != 0 {
		t.Fatalf("an abort was not served locally: %+v", o)
	}
	m.Follow()
	if m.Leading() {
		t.Fatal("still leading after Follow")
	}
}

// On a follower, the leader's state of a release its own pools do not
// hold yet (a registration reaches members a moment apart) is held, and
// served once they do: not at the leader's next write.
func TestFollowerAdoptsOnceItsPoolsAgree(t *testing.T) {
	store, sink := &memStore{states: map[string]State{}}, &sinkRec{last: map[string]Override{}}
	m := NewManager(Deps{Counters: newSim(), Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()),
		Store: store, Sink: sink, Clustered: true})
	defer m.Close()
	routes := registeredWeb(t, "{ stable: blue, canary: green, steps: [10, 100], interval: 1h }")
	r := &routes[0]
	pools := held{"blue": version("v1", 2)}
	m.SyncReleases(routes, pools.rel)
	leaders := State{Route: "web", Release: releaseID("blue", "green", "v:v2"), Strategy: "canary", Stable: "blue", Canary: "green",
		Phase: Progressing, StepIndex: 0, Weight: 1000, CanaryVersion: "v2"}
	m.Adopt(leaders)
	if o, ok := sink.get("web"); ok && o.CanaryBP != 0 {
		t.Fatalf("served a release this member's green does not hold: %+v", o)
	}
	pools["green"] = version("v2", 1)
	o, ok := m.Refresh(r, pools.rel)
	if !ok || o.CanaryBP != 1000 {
		t.Fatalf("once green holds v2 the follower serves %+v (%v)", o, ok)
	}
	if st, _ := m.Status("web"); st.Phase != Progressing || st.CanaryVersion != "v2" {
		t.Fatalf("follower's status: %+v", st)
	}
}
