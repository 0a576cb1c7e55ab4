// Package metrics holds canaryd's Prometheus collectors. Every collector is
// registered on a registry passed in; nothing uses the global default.
package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ReloadOutcome is a reload attempt's result: the values of
// canaryd_config_reloads_total's label, and the admin API's answer.
type ReloadOutcome string

// The reload results.
const (
	ReloadApplied   ReloadOutcome = "applied"
	ReloadUnchanged ReloadOutcome = "unchanged"
	ReloadFailed    ReloadOutcome = "failed"
)

// Reloads exports the outcome of config reloads.
type Reloads struct {
	successful prometheus.Gauge
	successTS  prometheus.Gauge
	total      *prometheus.CounterVec
	info       *prometheus.GaugeVec
	files      *prometheus.GaugeVec
	shown      map[string]bool // the file labels exported
}

// NewReloads registers the reload metrics on reg.
func NewReloads(reg prometheus.Registerer) *Reloads {
	r := &Reloads{
		successful: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "canaryd_config_last_reload_successful",
			Help: "1 if the config file as it stands is the one being served, 0 if the last reload failed.",
		}),
		successTS: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "canaryd_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful config load.",
		}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_config_reloads_total",
			Help: "Config reload attempts by result (applied, unchanged, failed).",
		}, []string{"result"}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "canaryd_config_info",
			Help: "Always 1; the hash label is the SHA-256 (first 16 hex digits) of the config being served.",
		}, []string{"hash"}),
	}
	r.files = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "canaryd_config_file_last_reload_successful",
		Help: "Per config file (the main file and each included one): 1 if the file as it stands is the one being served, 0 if its last read failed (an included file's last good version then serves).",
	}, []string{"file"})
	r.shown = map[string]bool{}
	reg.MustRegister(r.successful, r.successTS, r.total, r.info, r.files)
	for _, res := range []ReloadOutcome{ReloadApplied, ReloadUnchanged, ReloadFailed} {
		r.total.WithLabelValues(string(res)) // export zeros, so rate() works from the start
	}
	return r
}

// Loaded records the config served at start, which is not a reload.
func (r *Reloads) Loaded(hash string, at time.Time) {
	r.successful.Set(1)
	r.successTS.Set(float64(at.UnixNano()) / 1e9)
	r.info.Reset()
	r.info.WithLabelValues(hash).Set(1)
}

// Record counts one reload attempt. An unchanged file is the one being
// served, so it also means success.
func (r *Reloads) Record(result ReloadOutcome, hash string, at time.Time) {
	r.total.WithLabelValues(string(result)).Inc()
	switch result {
	case ReloadApplied:
		r.Loaded(hash, at)
	case ReloadUnchanged:
		r.successful.Set(1)
	case ReloadFailed:
		r.successful.Set(0)
	}
}

// Files records each config file's outcome in the last read (ok by
// path); the series of files no longer read go. Called by the reload
// goroutine only.
func (r *Reloads) Files(ok map[string]bool) {
	for f := range r.shown {
		if _, still := ok[f]; !still {
			r.files.DeleteLabelValues(f)
			delete(r.shown, f)
		}
	}
	for f, good := range ok {
		v := 0.0
		if good {
			v = 1
		}
		r.files.WithLabelValues(f).Set(v)
		r.shown[f] = true
	}
}

// File records one file's outcome, leaving the others' as they are (the
// main file's, when it could not be applied and the included files were
// not looked at).
func (r *Reloads) File(path string, ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	r.files.WithLabelValues(path).Set(v)
	r.shown[path] = true
}

// Health exports instance availability and ejections.
type Health struct {
	healthy   *instanceStates
	ejections *prometheus.CounterVec
}

// InstanceStates calls yield for every instance served and whether it
// takes traffic. It is read at each scrape, on the scraping goroutine:
// no lock a request waits on.
type InstanceStates func(yield func(route, pool, instance string, up bool))

// instanceStates is canaryd_instance_healthy, made at each scrape from
// the instances served. A gauge per instance kept in a GaugeVec costs
// about 600 bytes of live heap each (label pairs, the child, the map):
// 30 MB at 50,000 instances, for a value the instance's own record
// already holds.
type instanceStates struct {
	desc *prometheus.Desc
	src  atomic.Pointer[InstanceStates]
}

func (c *instanceStates) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *instanceStates) Collect(ch chan<- prometheus.Metric) {
	src := c.src.Load()
	if src == nil {
		return
	}
	(*src)(func(route, pool, instance string, up bool) {
		v := 0.0
		if up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, route, pool, instance)
	})
}

// NewHealth registers the health metrics on reg.
func NewHealth(reg prometheus.Registerer) *Health {
	h := &Health{
		healthy: &instanceStates{desc: prometheus.NewDesc("canaryd_instance_healthy",
			"1 if the instance takes traffic, 0 if a probe or passive ejection has it out.",
			[]string{"route", "pool", "instance"}, nil)},
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_instance_ejections_total",
			Help: "Passive ejections of the instance (outlier detection).",
		}, []string{"route", "pool", "instance"}),
	}
	reg.MustRegister(h.healthy, h.ejections)
	return h
}

// Source sets where canaryd_instance_healthy reads the instances (the
// live routing table); none: the metric has no series.
func (h *Health) Source(f InstanceStates) { h.healthy.src.Store(&f) }

// Ejected counts one ejection.
func (h *Health) Ejected(route, pool, instance string) {
	h.ejections.WithLabelValues(route, pool, instance).Inc()
}

// Forget drops the ejection series of an instance a reload removed (its
// healthy series goes with it from the table).
func (h *Health) Forget(route, pool, instance string) {
	h.ejections.DeleteLabelValues(route, pool, instance)
}

// Rollouts exports rollout progress and verdicts.
type Rollouts struct {
	pools    *prometheus.GaugeVec
	step     *prometheus.GaugeVec
	state    *prometheus.GaugeVec
	verdicts *prometheus.CounterVec
	gates    *prometheus.CounterVec
}

// NewRollouts registers the rollout metrics on reg.
func NewRollouts(reg prometheus.Registerer) *Rollouts {
	r := &Rollouts{
		pools: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "canaryd_rollout_pool",
			Help: "Always 1: the role (stable, canary) of a pool in its route's rollout, for joins in PromQL.",
		}, []string{"route", "pool", "role"}),
		step: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "canaryd_rollout_step",
			Help: "The rollout's current step, from 1.",
		}, []string{"route"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "canaryd_rollout_state",
			Help: "1 for the rollout's current state (idle, shadowing, segment, progressing, paused, baking, promoted, rolled_back), 0 for the others.",
		}, []string{"route", "state"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_rollout_verdicts_total",
			Help: "Rollout check verdicts by check and result (pass, fail, inconclusive).",
		}, []string{"route", "check", "result"}),
		gates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_rollout_gate_total",
			Help: "Rollout gate answers by gate and verdict (pass, fail, inconclusive), after retries.",
		}, []string{"route", "gate", "verdict"}),
	}
	reg.MustRegister(r.pools, r.step, r.state, r.verdicts, r.gates)
	return r
}

// SetRoles records which pools are a rollout's stable and canary.
func (r *Rollouts) SetRoles(route, stable, canary string) {
	r.pools.DeletePartialMatch(prometheus.Labels{"route": route})
	r.pools.WithLabelValues(route, stable, "stable").Set(1)
	r.pools.WithLabelValues(route, canary, "canary").Set(1)
}

// SetRollout records a rollout's step and state.
func (r *Rollouts) SetRollout(route string, step int, state string, all []string) {
	r.step.WithLabelValues(route).Set(float64(step))
	for _, s := range all {
		v := 0.0
		if s == state {
			v = 1
		}
		r.state.WithLabelValues(route, s).Set(v)
	}
}

// Verdict counts one check verdict.
func (r *Rollouts) Verdict(route, check, result string) {
	r.verdicts.WithLabelValues(route, check, result).Inc()
}

// Gate counts one gate's verdict.
func (r *Rollouts) Gate(route, gate, verdict string) {
	r.gates.WithLabelValues(route, gate, verdict).Inc()
}

// ForgetRollout drops the series of a route whose rollout was removed.
func (r *Rollouts) ForgetRollout(route string, all []string) {
	r.step.DeleteLabelValues(route)
	r.pools.DeletePartialMatch(prometheus.Labels{"route": route})
	r.state.DeletePartialMatch(prometheus.Labels{"route": route})
	r.verdicts.DeletePartialMatch(prometheus.Labels{"route": route})
	r.gates.DeletePartialMatch(prometheus.Labels{"route": route})
}
