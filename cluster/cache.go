package cluster

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// cache is this member's copy of the cluster's keys, kept by one watch.
// Guarded by Cluster.mu.
type cache struct {
	self     string // this member: its own series are counted live, not here
	members  map[string]memberDoc
	election map[string]electionEntry // key → candidate
	states   map[string]stateEntry    // by route
	acks     map[string]map[string]int64
	stats    map[string]statsDoc // by member: its latest flush
	// retired are the counts of series that ended (a member gone, or
	// booted again): kept, so the sums never go back.
	retired  sums
	commands map[string]commandEntry // by key
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
}

type commandEntry struct {
	route string
	doc   commandDoc
	rev   int64
}

func newCache(self string) *cache {
	m := &cache{self: self, retired: sums{}}
	m.reset()
	return m
}

// load replaces the cache by a fresh read of every key (at start, and
// after a watch that fell behind a compaction). It returns the routes
// whose state changed. A flush series missing from the read, or of
// another boot, is retired: the sums never go back.
func (m *cache) load(prefix string, kvs []*mvccpb.KeyValue) []string {
	oldStats, oldStates := m.stats, m.states
	m.reset()
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
	for id, d := range oldStats {
		if n, ok := m.stats[id]; !ok || n.Boot != d.Boot {
			m.retire(id, d)
		}
	}
	return changed
}

func (m *cache) reset() {
	m.members = map[string]memberDoc{}
	m.election = map[string]electionEntry{}
	m.states = map[string]stateEntry{}
	m.acks = map[string]map[string]int64{}
	m.stats = map[string]statsDoc{}
	m.commands = map[string]commandEntry{}
	m.instances = map[string][]byte{}
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
	case "stats":
		var d statsDoc
		if json.Unmarshal(kv.Value, &d) == nil {
			if old, ok := m.stats[rest]; ok && old.Boot != d.Boot {
				m.retire(rest, old) // a new boot: a new series
			}
			m.stats[rest] = d
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
		Phase string `json:"phase"`
	}
	json.Unmarshal(data, &phase)
	// The phases of rollout.Phase.UnderWay (cluster does not import
	// rollout: the state is the leader's JSON).
	busy := phase.Phase == "progressing" || phase.Phase == "paused" || phase.Phase == "shadowing" || phase.Phase == "segment"
	m.states[route] = stateEntry{data: data, rev: rev, at: at, busy: busy}
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
	case "stats":
		if old, ok := m.stats[rest]; ok {
			m.retire(rest, old)
			delete(m.stats, rest)
		}
	case "commands":
		delete(m.commands, key)
	case "instances":
		delete(m.instances, key)
	}
}

// retire keeps the last counts of another member's series that ended.
func (m *cache) retire(id string, d statsDoc) {
	if id != m.self {
		m.retired.add(d)
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
// flushes and the retired series.
func (m *cache) sum(self, route, pool string) PoolStats {
	s := sums{}
	k := poolKey{route, pool}
	var out PoolStats
	if r := m.retired[k]; r != nil {
		out = *r
	}
	for id, d := range m.stats {
		if id == self {
			continue
		}
		s.add(d)
	}
	if e := s[k]; e != nil {
		out.Traffic.Add(e.Traffic)
		out.Shadow.Add(e.Shadow)
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
