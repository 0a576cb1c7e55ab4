package rollout

import "errors"

// Store keeps rollout states between decisions: files in state_dir for a
// single process, the cluster's etcd (fenced by leadership) in cluster
// mode.
type Store interface {
	// Load is a route's saved state; nil without error when there is none.
	Load(route string) (*State, error)
	// Save writes a state. In cluster mode it fails with ErrNotLeader when
	// this member no longer leads: its decision must not be served.
	Save(st *State) error
	// Remove forgets a route's state (its rollout left the config).
	Remove(route string) error
}

// ErrNotLeader is Save's error on a member that lost the leadership: the
// write was fenced off, and the decision it carried is void.
var ErrNotLeader = errors.New("this member is not the cluster's leader any more")

// Sink receives the weights each rollout imposes; the app composes them
// with the file's and the operator's. It must not call back into the
// manager.
type Sink interface {
	SetOverride(route string, o Override)
}

// Files is the single process's Store: one JSON file per route in dir.
type Files struct{ Dir string }

func (f Files) Load(route string) (*State, error) { return load(f.Dir, route) }
func (f Files) Save(st *State) error              { return save(f.Dir, st) }
func (f Files) Remove(route string) error         { return remove(f.Dir, route) }
