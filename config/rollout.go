// Package config holds canaryd's configuration as plain data: the YAML types,
// their defaults (filled in one place, applyDefaults), and a strict loader that
// reports every problem with the field and line it came from.
//
// Nothing here is runtime state: the balancer, proxy and servers are built
// from a validated Config, never the other way round.
package config

// Shadow is a rollout's shadow phase: before any live step, the canary
// gets copies of a share of the route's requests, judged like a step.
type Shadow struct {
	// Percent of the route's requests copied to the canary. Default 10.
	Percent Percent `yaml:"percent"`
	// MinRequests copies answered before the phase is judged. Default:
	// the rollout's min_requests.
	MinRequests int `yaml:"min_requests"`
	// MaxMismatchRate of compared answers (0..1), judged with the
	// analysis' confidence interval. Default 0.05.
	MaxMismatchRate *float64 `yaml:"max_mismatch_rate"`
	// Options are as for routes[].mirror.
	Options ShadowOptions `yaml:",inline"`
}

// Rollout strategies.
const (
	StrategyCanary    = "canary"
	StrategyLinear    = "linear"
	StrategyBlueGreen = "blue_green"
)

// Rollout is an automatic, analysed release of one pool over another.
type Rollout struct {
	// Strategy: "canary" (Steps, or Step up to 100), "linear" (Step every
	// Interval) or "blue_green" (preview at 0%, then one switch to 100).
	// Default "canary".
	Strategy string `yaml:"strategy"`
	// Stable and Canary name pools of the route. Required.
	// Segment names a rule of the route whose traffic goes to the canary
	// from the first step (before any weighted user), judged on its own
	// in a segment phase, and back to stable on a rollback. Default: none.
	Segment string `yaml:"segment"`
	Stable  string `yaml:"stable"`
	Canary  string `yaml:"canary"`
	// Steps are the canary's weights in percent, rising, ending at 100.
	// Default (canary): [1, 5, 25, 50, 100].
	Steps []Percent `yaml:"steps"`
	// Step is the increment of "linear", and of "canary" when it has no
	// Steps but a Step: step, 2×step... up to Max, then 100. Default 10.
	Step Percent `yaml:"step"`
	// Max is the last weight before the switch to 100 when steps come from
	// Step. Default 100.
	Max Percent `yaml:"max"`
	// Interval between analyses (and so the shortest time at a step).
	// Default 30s.
	Interval Duration `yaml:"interval"`
	// MinRequests the canary must answer in a step before its numbers are
	// judged; below it every check is inconclusive. Default 200.
	MinRequests int `yaml:"min_requests"`
	// FailureLimit failed analyses at one step roll the release back; each
	// rests on evidence no other used, and a passed step clears the count.
	// Default 2.
	FailureLimit int `yaml:"failure_limit"`
	// MaxInconclusive inconclusive analyses in a row pause the rollout.
	// Default 10.
	MaxInconclusive int `yaml:"max_inconclusive"`
	// MaxGathering analyses in a row may hold a step to gather evidence (a
	// confidence interval that straddles its bound) before the rollout
	// pauses with the verdicts that could not decide. Default 200.
	MaxGathering int `yaml:"max_gathering"`
	// PauseBefore lists weights to stop before, until "canaryd resume".
	// Default none.
	PauseBefore []Percent `yaml:"pause_before"`
	// Tripwire rolls back at once on a burst of canary errors.
	Tripwire Tripwire `yaml:"tripwire"`
	// Analysis is what each interval judges.
	Analysis Analysis `yaml:"analysis"`
	// Webhook receives every event as JSON (one notify entry of format
	// json). Default none.
	Webhook Webhook `yaml:"webhook"`
	// Notify lists receivers of the rollout's events (notify.go). Default
	// none.
	Notify []Notify `yaml:"notify"`
	// Shadow starts the rollout in a shadow phase (phase "shadowing"):
	// copies of live requests only, judged, before the first live step.
	// Default: none.
	Shadow *Shadow `yaml:"shadow"`
	// Gates are outside checks the release waits on (gates.go). Default:
	// none.
	Gates []Gate `yaml:"gates"`
	// Bake keeps judging the canary after it reaches 100%, the stable
	// pool kept to revert to (phase "baking"). Default: none.
	Bake *Bake `yaml:"bake"`
	// Rollback is how traffic goes back to stable. Default: instant.
	Rollback Rollback `yaml:"rollback"`
	// FastRevert: a release that was the stable one within this window,
	// deployed again, goes straight to 100% (baking, the tripwire on)
	// instead of starting at step 1. Default 0 (off).
	FastRevert Duration `yaml:"fast_revert"`
}

// Rollback modes.
const (
	RollbackInstant = "instant"
	RollbackGradual = "gradual"
)

// Rollback is how a rollback moves traffic back to stable.
type Rollback struct {
	// Mode: instant (everything to stable at once) or gradual (Steps,
	// every Interval, for a stable pool that needs to warm up; the
	// tripwire forces instant). Default instant.
	Mode string `yaml:"mode"`
	// Steps are the canary's weights on the way down, falling, ending at
	// 0; those at or above the weight the rollback starts from are
	// skipped. Default [50, 20, 0].
	Steps []Percent `yaml:"steps"`
	// Interval between the steps down. Default 10s.
	Interval Duration `yaml:"interval"`
	// CloseStreamsAfter: this long after a rollback, canaryd ends the
	// long-lived requests the canary still serves (WebSockets, server-sent
	// events, gRPC streams). Default 0 (off: they end on their own).
	CloseStreamsAfter Duration `yaml:"close_streams_after"`
}

// Bake is the watch after 100%.
type Bake struct {
	// Duration of the bake. Required.
	Duration Duration `yaml:"duration"`
}

// GatesAt lists the rollout's gates at one point, in config order.
func (ro *Rollout) GatesAt(at string) []Gate {
	var out []Gate
	for _, g := range ro.Gates {
		if g.At == at {
			out = append(out, g)
		}
	}
	return out
}

// Tripwire is the fast path to rollback.
type Tripwire struct {
	// Disabled turns the tripwire off. Default false.
	Disabled bool `yaml:"disabled"`
	// Window the burst is counted over. Default 10s.
	Window Duration `yaml:"window"`
	// MinRequests canary requests within Window before it can fire.
	// Default 20.
	MinRequests int `yaml:"min_requests"`
	// MaxErrorRate of the canary within Window; at or above it (while the
	// stable pool stays under half of it) the release rolls back. Default 0.5.
	MaxErrorRate float64 `yaml:"max_error_rate"`
}

// Analysis lists the checks of each interval; all are optional, and with
// none the sample gate alone decides.
type Analysis struct {
	// MaxErrorRate of the canary since the step began (0..1). Default: off.
	MaxErrorRate *float64 `yaml:"max_error_rate"`
	// MaxLatencyP99 of the canary since the step began: at most 1% of its
	// requests slower than this. Default: off.
	MaxLatencyP99 Duration `yaml:"max_latency_p99"`
	// Confidence of the intervals max_error_rate and max_latency_p99 are
	// judged with (0.5..1): fail when the whole interval is above the
	// bound, pass when it is below, hold in between. Default 0.95.
	Confidence float64 `yaml:"confidence"`
	// CompareToStable judges the canary against stable over the same time.
	// Default: off.
	CompareToStable *Compare `yaml:"compare_to_stable"`
	// Prometheus runs PromQL checks. Default: none.
	Prometheus *PrometheusAnalysis `yaml:"prometheus"`
	// HTTP checks read a number from any metric source's JSON API
	// (httpcheck.go). Default: none.
	HTTP []HTTPCheck `yaml:"http"`
	// DryRun names built-in checks whose verdicts are recorded and shown
	// but decide nothing: error_rate, latency_p99, compare_errors,
	// compare_latency, compare_tail, canary_available, shadow_mismatch.
	// Default none.
	DryRun []string `yaml:"dry_run"`
}

// DryRunChecks are the built-in checks analysis.dry_run may name (a new
// slice at every call).
func DryRunChecks() []string {
	return []string{"error_rate", "latency_p99", "compare_errors", "compare_latency", "compare_tail", "canary_available", "shadow_mismatch"}
}

// Compare tests canary against stable statistically.
type Compare struct {
	// Confidence needed to call the canary worse (0.5..1). Default 0.99.
	Confidence float64 `yaml:"confidence"`
	// MaxRatio tolerated of canary over stable (error rate, latency).
	// Default 1.5.
	MaxRatio float64 `yaml:"max_ratio"`
	// MinDifference in error rate tolerated on top of the ratio, so that a
	// stable pool without errors does not make one canary error fatal.
	// Default 0.005.
	MinDifference *float64 `yaml:"min_difference"`
	// MinLatencyDifference: a slower canary fails only if its p50 or p99 is
	// also this much above stable's, so sub-millisecond noise on a fast
	// service is no reason to roll back. Default 10ms.
	MinLatencyDifference Duration `yaml:"min_latency_difference"`
}

// PrometheusAnalysis runs PromQL checks against a Prometheus server.
type PrometheusAnalysis struct {
	// URL of the Prometheus server. Required.
	URL string `yaml:"url"`
	// Timeout of one query. Default 5s.
	Timeout Duration `yaml:"timeout"`
	// Checks; each query must return one number.
	Checks []PromCheck `yaml:"checks"`
}

// PromCheck is one PromQL query and its bounds. In the query, {{route}},
// {{stable}}, {{canary}} and {{interval}} (the time since the step began,
// as a PromQL duration) are replaced.
type PromCheck struct {
	Name  string   `yaml:"name"`
	Query string   `yaml:"query"`
	Min   *float64 `yaml:"min"`
	Max   *float64 `yaml:"max"`
	// DryRun: the verdict is recorded and shown but decides nothing.
	// Default false.
	DryRun bool `yaml:"dry_run"`
}

// Webhook is told of every rollout transition (POST, JSON).
type Webhook struct {
	// URL to POST to. Default "" (none).
	URL string `yaml:"url"`
	// Timeout of one attempt. Default 5s.
	Timeout Duration `yaml:"timeout"`
	// Retries after a failed attempt. Default 3.
	Retries *int `yaml:"retries"`
}
