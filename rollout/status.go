package rollout

import (
	"time"

	"canaryd/config"
)

// Status is a rollout as the admin API shows it.
type Status struct {
	Route    string `json:"route"`
	Strategy string `json:"strategy"`
	Stable   string `json:"stable"`
	Canary   string `json:"canary"`
	// StableVersion and CanaryVersion: the versions the pools in those
	// roles run (omitted when unknown).
	StableVersion string    `json:"stable_version,omitempty"`
	CanaryVersion string    `json:"canary_version,omitempty"`
	Phase         Phase     `json:"phase"`
	Reason        string    `json:"reason"`
	Step          int       `json:"step"`
	Steps         []float64 `json:"steps"`
	CanaryWeight  float64   `json:"canary_weight"`
	StableWeight  float64   `json:"stable_weight"`
	// Shadow: in the shadow phase, whose copies are ShadowPercent of the
	// route's requests.
	Shadow        bool    `json:"shadow,omitempty"`
	ShadowPercent float64 `json:"shadow_percent,omitempty"`
	// Segment names the rule whose requests the canary serves first
	// (rollout.segment); InSegment: the rollout is in its segment phase.
	Segment   string `json:"segment,omitempty"`
	InSegment bool   `json:"in_segment,omitempty"`
	// Gate: the rollout waits on its gates (which, where, since when).
	Gate *GateWait `json:"gate,omitempty"`
	// Estimate: while the step holds to gather evidence, about how many
	// more canary requests and how long until its analysis can decide.
	Estimate *Estimate `json:"estimate,omitempty"`
	// BakeUntil: while baking, when the bake ends (once its analyses and
	// gates pass).
	BakeUntil       time.Time `json:"bake_until,omitzero"`
	Failures        int       `json:"failures"`
	FailureLimit    int       `json:"failure_limit"`
	Inconclusive    int       `json:"inconclusive_in_a_row"`
	MaxInconclusive int       `json:"max_inconclusive"`
	Gathering       int       `json:"gathering_in_a_row"`
	MaxGathering    int       `json:"max_gathering"`
	StepStarted     time.Time `json:"step_started"`
	// EvidenceSince is where the counts the next analysis judges begin:
	// the step's start, or the last failed analysis.
	EvidenceSince time.Time `json:"evidence_since"`
	Interval      string    `json:"interval"`
	// NextAnalysis is when the step is judged next (zero when not running).
	NextAnalysis time.Time `json:"next_analysis,omitzero"`
	LastVerdicts []Verdict `json:"last_verdicts"`
	History      []Event   `json:"history"`
}

func (c *controller) status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Status{
		Route: c.route, Strategy: c.spec.Strategy, Stable: c.st.Stable, Canary: c.st.Canary,
		StableVersion: c.st.StableVersion, CanaryVersion: c.st.CanaryVersion,
		Phase: c.st.Phase, Reason: c.st.Reason, Step: c.st.StepIndex + 1,
		CanaryWeight: float64(c.st.Weight) / 100, StableWeight: float64(config.Full.BasisPoints()-c.st.Weight) / 100,
		Failures: c.st.Failures, FailureLimit: c.spec.FailureLimit,
		Inconclusive: c.st.Inconclusive, MaxInconclusive: c.spec.MaxInconclusive,
		Gathering: c.st.Gathering, MaxGathering: c.spec.MaxGathering,
		StepStarted: c.st.StepStarted, EvidenceSince: c.st.EvidenceSince, Interval: c.spec.Interval.String(),
		LastVerdicts: append([]Verdict(nil), c.st.LastVerdicts...),
		History:      append([]Event(nil), c.st.History...),
	}
	for _, w := range c.spec.Steps {
		s.Steps = append(s.Steps, float64(w)/100)
	}
	if c.st.Shadow && c.spec.Shadow != nil {
		s.Shadow = true
		s.ShadowPercent = float64(c.spec.Shadow.Percent) / 100
	}
	s.Segment, s.InSegment = c.spec.Segment, c.st.Segment
	s.BakeUntil = c.st.BakeUntil
	if e := c.st.Estimate; e != nil && c.st.Phase.judging() {
		cp := *e
		s.Estimate = &cp
	}
	if g := c.st.Gate; g != nil {
		cp := *g
		cp.Verdicts = append([]Verdict(nil), g.Verdicts...)
		s.Gate = &cp
	}
	if n := c.nextAt.Load(); n != 0 && c.st.Phase.judging() && c.st.Gate == nil {
		s.NextAnalysis = time.Unix(0, n)
	}
	return s
}
