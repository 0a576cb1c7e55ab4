package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Phase is where a rollout is. Its JSON and its metric label are the
// names below.
type Phase string

// Phases of a rollout.
const (
	Idle Phase = "idle"
	// Shadowing: the rollout's shadow phase, before any live step: the
	// canary has no live traffic and gets copies of requests.
	Shadowing Phase = "shadowing"
	// SegmentPhase: the rollout's segment phase (rollout.segment), before
	// the weighted steps: the canary serves the segment rule's requests
	// only, and is judged on them.
	SegmentPhase Phase = "segment"
	Progressing  Phase = "progressing"
	Paused       Phase = "paused"
	// Baking: the canary has 100% and is still judged, against its own
	// bounds, for rollout.bake.duration; a failure reverts to the stable
	// pool, kept configured until the bake ends.
	Baking     Phase = "baking"
	Promoted   Phase = "promoted"
	RolledBack Phase = "rolled_back"
)

func (p Phase) String() string { return string(p) }

// UnderWay reports whether a rollout in this phase may still move traffic
// by itself or by a resume: progressing, paused or shadowing.
func (p Phase) UnderWay() bool {
	return p == Progressing || p == Paused || p == Shadowing || p == SegmentPhase || p == Baking
}

// judging: an analysis runs in this phase.
func (p Phase) judging() bool {
	return p == Progressing || p == Shadowing || p == SegmentPhase || p == Baking
}

// phaseNames lists every phase's name (for the state metric).
var phaseNames = []string{string(Idle), string(Shadowing), string(SegmentPhase), string(Progressing), string(Paused), string(Baking), string(Promoted), string(RolledBack)}

// Action is an operator's command to a rollout.
type Action string

// Actions, as the API's paths and the CLI's commands name them.
const (
	Promote Action = "promote"
	Abort   Action = "abort"
	Pause   Action = "pause"
	Resume  Action = "resume"
)

// Actions lists every action.
var Actions = []Action{Promote, Abort, Pause, Resume}

func (a Action) String() string { return string(a) }

// ParseAction is the action of a name, or an error that lists them.
func ParseAction(s string) (Action, error) {
	for _, a := range Actions {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("unknown action %q; use promote, abort, pause or resume", s)
}

// Done is the phase an action leaves a rollout in when it succeeds
// (resume: none fixed), so that asking it again can say "already".
func (a Action) Done() (Phase, bool) {
	switch a {
	case Promote:
		return Promoted, true
	case Abort:
		return RolledBack, true
	case Pause:
		return Paused, true
	}
	return "", false
}

// maxHistory bounds the transitions kept in a state file.
const maxHistory = 200

// State is a rollout's persisted state: enough to resume after a restart at
// the same step with the same weights, and to tell its story.
type State struct {
	Route    string `json:"route"`
	Release  string `json:"release"`
	Strategy string `json:"strategy"`
	Stable   string `json:"stable"`
	Canary   string `json:"canary"`
	// StableVersion and CanaryVersion are the versions the roles' pools
	// run ("" when unknown).
	StableVersion string `json:"stable_version,omitempty"`
	CanaryVersion string `json:"canary_version,omitempty"`
	// StableRelease is what the stable pool held (PoolRelease.ID) when
	// the canary was promoted: a new release there afterwards swaps the
	// roles.
	StableRelease string `json:"stable_release,omitempty"`
	Phase         Phase  `json:"phase"`
	// StepIndex into the rollout's steps; Weight is the canary's weight in
	// basis points now (0 after a rollback, 10000 once promoted).
	StepIndex int `json:"step_index"`
	Weight    int `json:"weight_bp"`
	Failures  int `json:"failures"`
	// AtGate: paused at a manual gate (pause_before); resume goes past it.
	AtGate bool `json:"at_gate,omitempty"`
	// Drift: paused by the cluster's leader because members' configs of
	// the route differ; it resumes by itself when they agree again.
	Drift bool `json:"drift,omitempty"`
	// Shadow: in the shadow phase (shadowing, or paused in it); the live
	// steps have not begun.
	Shadow bool `json:"shadow,omitempty"`
	// Segment: in the segment phase (segment, or paused in it); the
	// weighted steps have not begun.
	Segment bool `json:"segment,omitempty"`
	// BakeUntil: the bake after 100% ends then (when its gates and
	// analysis have passed); set while baking, or paused in the bake.
	BakeUntil time.Time `json:"bake_until,omitzero"`
	// Unwind: the canary's weights (basis points) still to come in a
	// gradual rollback, the next at UnwindAt.
	Unwind   []int     `json:"unwind,omitempty"`
	UnwindAt time.Time `json:"unwind_at,omitzero"`
	// CloseStreams: the long-lived requests the rolled back canary still
	// serves end then (rollback.close_streams_after), on every member.
	CloseStreams *StreamClose `json:"close_streams,omitempty"`
	// PastStables are the releases that were stable until a promotion
	// replaced them, newest last (for rollout.fast_revert).
	PastStables []PastStable `json:"past_stables,omitempty"`
	// Estimate: while a step holds to gather evidence, about how long
	// until its analysis can decide.
	Estimate *Estimate `json:"estimate,omitempty"`
	// Gate: the rollout waits on its gates at a point of the release.
	Gate         *GateWait `json:"gate,omitempty"`
	Inconclusive int       `json:"inconclusive_in_a_row"`
	// Gathering analyses in a row held the step for more evidence.
	Gathering int `json:"gathering_in_a_row,omitempty"`
	// EvidenceSince: the next analysis judges the counts from here (the
	// step's start or the last failed analysis). In-process counts restart
	// with the process, and so does the evidence.
	EvidenceSince time.Time `json:"evidence_since"`
	Reason        string    `json:"reason"`
	StepStarted   time.Time `json:"step_started"`
	LastVerdicts  []Verdict `json:"last_verdicts,omitempty"`
	History       []Event   `json:"history"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// Kinds of events.
const (
	// KindTransition: the phase, the step or the weights changed.
	KindTransition = "transition"
	// KindAnalysis: an analysis held the step (failed, gathering or
	// inconclusive); From and To are the same phase.
	KindAnalysis = "analysis"
	// KindGate: gates answered without moving the rollout (a failure
	// under failure_limit, no decision, a rollback's advisory gates).
	KindGate = "gate"
)

// Event is one transition of a rollout, or one analysis that held it.
type Event struct {
	At time.Time `json:"at"`
	// Kind is KindTransition or KindAnalysis (state files from before
	// analyses were recorded have none: transitions).
	Kind string `json:"kind,omitempty"`
	// Repeats counts later analyses with the same outcome folded into
	// this event (its time and verdicts are the last one's).
	Repeats  int       `json:"repeats,omitempty"`
	From     Phase     `json:"from"`
	To       Phase     `json:"to"`
	Step     int       `json:"step"`
	WeightBP int       `json:"weight_bp"`
	Reason   string    `json:"reason"`
	Verdicts []Verdict `json:"verdicts,omitempty"`
	// Approval: who approved an approval gate, from where, when and why.
	Approval *Approval `json:"approval,omitempty"`
}

// record appends an event. An analysis with the same outcome as the one
// just before it (the same checks with the same results, at the same
// step) is folded into it, so a step that holds for a hundred intervals
// tells its story in one line. Over maxHistory, the oldest analyses go
// first: transitions are the story's spine.
func (s *State) record(e Event) {
	if n := len(s.History); n > 0 && (e.Kind == KindAnalysis || e.Kind == KindGate) {
		last := &s.History[n-1]
		if last.Kind == e.Kind && last.Step == e.Step && last.To == e.To && sameOutcome(last.Verdicts, e.Verdicts) {
			e.Repeats = last.Repeats + 1
			*last = e
			return
		}
	}
	s.History = append(s.History, e)
	for len(s.History) > maxHistory {
		drop := 0
		for i, old := range s.History {
			if old.Kind == KindAnalysis || old.Kind == KindGate {
				drop = i
				break
			}
		}
		s.History = append(s.History[:drop:drop], s.History[drop+1:]...)
	}
}

func sameOutcome(a, b []Verdict) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Check != b[i].Check || a[i].Result != b[i].Result || a[i].Gathering != b[i].Gathering {
			return false
		}
	}
	return true
}

// stateFile is where a route's state lives.
func stateFile(dir, route string) string { return filepath.Join(dir, "rollout-"+route+".json") }

// save writes the state atomically: a temp file in the same directory,
// fsync, rename over the old one, fsync the directory. A crash leaves the
// old state or the new, never half of one.
func save(dir string, s *State) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state_dir %s: %w", dir, err)
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".rollout-*.tmp")
	if err != nil {
		return fmt.Errorf("state_dir %s: %w", dir, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, stateFile(dir, s.Route)); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// load reads a route's state; nil without error when there is none.
func load(dir, route string) (*State, error) {
	data, err := os.ReadFile(stateFile(dir, route))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s is not a rollout state (%v); move it away to start afresh", stateFile(dir, route), err)
	}
	return &s, nil
}

func remove(dir, route string) error {
	err := os.Remove(stateFile(dir, route))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
