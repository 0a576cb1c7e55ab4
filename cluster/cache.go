package cluster

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// cache is this member's copy of the cluster's keys, kept by its watches.
// Guarded by Cluster.mu.
type cache struct {
	self     string // this member: its own series are counted live, not here
	members  map[string]memberDoc
	election map[string]electionEntry // key → candidate
	states   map[string]stateEntry    // by route
	// acks, counts and commands are the reports, watched by the leader
	// only (a follower's are empty): acks by route then member, stats by
	// route then member (each member's latest flush of the route's
	// series, from counts/), commands by key.
	acks     map[string]map[string]int64
	stats    map[string]map[string]statsDoc
	commands map[string]commandEntry
	// retired are the counts of series that ended (a member gone, or
	// a new series of its): kept, so the sums never go back.
	retired sums
	// instances are the registrations, by key (instances.go).
	instances map[string][]byte
}

type electionEntry struct {
	member string
	rev    int64 // create revision: the lowest leads
}

type stateEntry struct {
	data []byte
	rev  int64
	at   time.Time // the leader's write
	busy bool      // the rollout is under way
	// pools are the rollout's canary and stable: the only pools whose
	// counts the leader judges, so the only ones reported and charted.
	pools [2]string
}

// inRollout: pool is the canary or the stable of the state's rollout
// (any pool when the state names none).
func (s stateEntry) inRollout(pool string) bool {
	return s.pools == [2]string{} || pool != "" && (pool == s.pools[0] || pool == s.pools[1])
}

type commandEntry struct {
	route string
	doc   commandDoc
	rev   int64
}

func newCache(self string) *cache {
	m := &cache{self: self, retired: sums{}}
	m.resetShared()
	m.resetReports()
	return m
}

// loadShared replaces the shared keys (all but the reports) by a fresh
// read of them (at start, and after a watch that fell behind a
// compaction). It returns the routes whose state changed.
func (m *cache) loadShared(prefix string, kvs []*mvccpb.KeyValue) []string {
	oldStates := m.states
	m.resetShared()
	m.states = oldStates
	seen := map[string]bool{}
	var changed []string
	for _, kv := range kvs {
		if r := m.put(prefix, kv); r != "" {
			changed = append(changed, r)
		}
		if strings.HasPrefix(string(kv.Key), prefix+"state/") {
			seen[strings.TrimPrefix(string(kv.Key), prefix+"state/")] = true
		}
	}
	for r := range m.states {
		if !seen[r] {
			delete(m.states, r)
		}
	}
	return changed
}

// loadReports replaces the acknowledgements, counts and commands by a
// fresh read of them (when this member starts leading, and after its
// watch of them fell behind a compaction). A series missing from the
// read, or replaced by another, is retired: the sums never go back.
func (m *cache) loadReports(prefix string, kvs []*mvccpb.KeyValue) {
	old := m.stats
	m.resetReports()
	for _, kv := range kvs {
		m.put(prefix, kv)
	}
	for route, docs := range old {
		for id, d := range docs {
			if n, ok := m.stats[route][id]; !ok || n.Series != d.Series {
				m.retire(route, id, d)
			}
		}
	}
}

// dropReports forgets the reports (this member no longer leads: the next
// leadership reads them afresh and restarts the evidence).
func (m *cache) dropReports() {
	m.resetReports()
	m.retired = sums{}
}

func (m *cache) resetShared() {
	m.members = map[string]memberDoc{}
	m.election = map[string]electionEntry{}
	m.states = map[string]stateEntry{}
	m.instances = map[string][]byte{}
}

func (m *cache) resetReports() {
	m.acks = map[string]map[string]int64{}
	m.stats = map[string]map[string]statsDoc{}
	m.commands = map[string]commandEntry{}
}

// put applies a key's new value; it returns the route of a state that
// changed ("" otherwise).
func (m *cache) put(prefix string, kv *mvccpb.KeyValue) (route string) {
	kind, rest, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), prefix), "/")
	switch kind {
	case "members":
		var d memberDoc
		if json.Unmarshal(kv.Value, &d) == nil {
			m.members[rest] = d
		}
	case "election":
		m.election[rest] = electionEntry{member: string(kv.Value), rev: kv.CreateRevision}
	case "state":
		if m.putState(prefix, kv) {
			return rest
		}
	case "acks":
		r, id, ok := strings.Cut(rest, "/")
		if n, err := strconv.ParseInt(string(kv.Value), 10, 64); ok && err == nil {
			if m.acks[r] == nil {
				m.acks[r] = map[string]int64{}
			}
			m.acks[r][id] = n
		}
	case "counts":
		r, id, ok := strings.Cut(rest, "/")
		var d statsDoc
		if ok && json.Unmarshal(kv.Value, &d) == nil {
			if old, ok := m.stats[r][id]; ok && old.Series != d.Series {
				m.retire(r, id, old) // a new series
			}
			if m.stats[r] == nil {
				m.stats[r] = map[string]statsDoc{}
			}
			m.stats[r][id] = d
		}
	case "instances":
		m.instances[string(kv.Key)] = kv.Value
	case "commands":
		r, _, _ := strings.Cut(rest, "/")
		var d commandDoc
		if json.Unmarshal(kv.Value, &d) == nil {
			m.commands[string(kv.Key)] = commandEntry{route: r, doc: d, rev: kv.ModRevision}
		}
	}
	return ""
}

// putState records a state/ key unless the cache has a newer one; it
// reports whether it changed.
func (m *cache) putState(prefix string, kv *mvccpb.KeyValue) bool {
	route := strings.TrimPrefix(string(kv.Key), prefix+"state/")
	if old, ok := m.states[route]; ok && old.rev >= kv.ModRevision {
		return false
	}
	var d stateDoc
	if json.Unmarshal(kv.Value, &d) != nil {
		return false
	}
	m.setState(route, d.State, kv.ModRevision, d.At)
	return true
}

func (m *cache) setState(route string, data []byte, rev int64, at time.Time) {
	if old, ok := m.states[route]; ok && old.rev >= rev {
		return
	}
	var phase struct {
		Phase  string `json:"phase"`
		Canary string `json:"canary"`
		Stable string `json:"stable"`
	}
	json.Unmarshal(data, &phase)
	// The phases of rollout.Phase.UnderWay (cluster does not import
	// rollout: the state is the leader's JSON).
	busy := phase.Phase == "progressing" || phase.Phase == "paused" || phase.Phase == "shadowing" || phase.Phase == "segment"
	m.states[route] = stateEntry{data: data, rev: rev, at: at, busy: busy, pools: [2]string{phase.Canary, phase.Stable}}
}

func (m *cache) del(prefix string, key string) {
	kind, rest, _ := strings.Cut(strings.TrimPrefix(key, prefix), "/")
	switch kind {
	case "members":
		delete(m.members, rest)
	case "election":
		delete(m.election, rest)
	case "state":
		delete(m.states, rest)
	case "acks":
		r, id, _ := strings.Cut(rest, "/")
		delete(m.acks[r], id)
	case "counts":
		r, id, _ := strings.Cut(rest, "/")
		if old, ok := m.stats[r][id]; ok {
			m.retire(r, id, old)
			delete(m.stats[r], id)
		}
	case "commands":
		delete(m.commands, key)
	case "instances":
		delete(m.instances, key)
	}
}

// retire keeps the last counts of another member's series that ended.
func (m *cache) retire(route, id string, d statsDoc) {
	if id != m.self {
		m.retired.add(route, d)
	}
}

// leader is the member whose election key is oldest ("" when none).
func (m *cache) leader() string {
	best, id := int64(0), ""
	for _, e := range m.election {
		if best == 0 || e.rev < best {
			best, id = e.rev, e.member
		}
	}
	return id
}

// sum is the counts of a pool on every member but self: their latest
// flushes and the retired series. It reads the route's documents only.
func (m *cache) sum(self, route, pool string) PoolStats {
	out := PoolStats{Route: route, Pool: pool}
	if r := m.retired[poolKey{route, pool}]; r != nil {
		out = *r
	}
	for id, d := range m.stats[route] {
		if id == self {
			continue
		}
		for i := range d.Pools {
			if d.Pools[i].Pool == pool {
				addPool(&out, &d.Pools[i])
			}
		}
	}
	return out
}

func (m *cache) busy() bool {
	for _, s := range m.states {
		if s.busy {
			return true
		}
	}
	return false
}
