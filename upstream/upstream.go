// Package upstream holds the one record of each instance (a backend
// address of one route's pool) that every part of canaryd shares: the
// balancer reads and sets its availability, in-flight count and slow
// start; health keeps its passive counters and ejection state on it; the
// request path reaches all of it from the instance the pick returned,
// with no lookup. It imports only the standard library, so that balancer
// and health, which never import each other, can both use it.
package upstream

import (
	"net/url"
	"sync/atomic"
	"time"
)

// Instance is one instance's record. It outlives tables and reloads that
// keep the instance (same route, pool and address).
type Instance struct {
	Route string
	Pool  string
	// URL is the target; canonical (see config.ParseInstance), never changed.
	URL *url.URL
	// Addr is URL.String(), the instance's name in logs and metrics.
	Addr string

	down atomic.Bool
	// rampStart is when the instance last became available (unix ns), for
	// slow start; 0 once ramped up or when it never needed to.
	rampStart atomic.Int64
	_         [48]byte
	inflight  atomic.Int64
	_         [56]byte

	// Health is package health's state of the instance.
	Health Health
}

// Key names an instance: the same address in two pools (or routes) is
// two instances, each with its own record.
type Key struct{ Route, Pool, Addr string }

// Key is the instance's name.
func (in *Instance) Key() Key { return Key{in.Route, in.Pool, in.Addr} }

// New returns the record of a new instance, available.
func New(route, pool string, u *url.URL) *Instance {
	return &Instance{Route: route, Pool: pool, URL: u, Addr: u.String()}
}

// Available reports whether picks may choose the instance.
func (in *Instance) Available() bool { return !in.down.Load() }

// SetAvailable marks the instance available or not; it reports whether
// that changed anything. A change to available starts its slow start.
func (in *Instance) SetAvailable(up bool) bool {
	if !in.down.CompareAndSwap(up, !up) {
		return false
	}
	if up {
		in.rampStart.Store(time.Now().UnixNano())
	}
	return true
}

// InFlight is the number of requests the instance is serving now.
func (in *Instance) InFlight() int64 { return in.inflight.Load() }

// Acquire and Release count a request in flight on the instance.
func (in *Instance) Acquire() { in.inflight.Add(1) }

// Release ends what Acquire began.
func (in *Instance) Release() { in.inflight.Add(-1) }

// RampStart is when the slow start began (unix ns), 0 when none runs.
func (in *Instance) RampStart() int64 { return in.rampStart.Load() }

// StartRamp begins a slow start at now (unix ns).
func (in *Instance) StartRamp(now int64) { in.rampStart.Store(now) }

// EndRamp ends the slow start that began at start, if it is still that one.
func (in *Instance) EndRamp(start int64) { in.rampStart.CompareAndSwap(start, 0) }

// Health is what the request path reads and moves of package health's
// state of an instance: atomics only. What health decides under its own
// lock (ejection history, the availability it last reported) stays on
// health's handle of the instance, in package health.
type Health struct {
	// ConsecGateway and Consec5xx count consecutive gateway failures and
	// 5xx answers of live traffic.
	ConsecGateway atomic.Int32
	Consec5xx     atomic.Int32
	// Passive is the instance's passive-ejection settings.
	Passive atomic.Pointer[Passive]
	// Ejected: passive ejection has the instance out. ProbeDown: active
	// probes do. ProbeFailedSinceEjection: a probe failed during the
	// current ejection.
	Ejected, ProbeDown, ProbeFailedSinceEjection atomic.Bool
}

// Passive is passive ejection's settings, parsed: the one runtime form of
// config.PassiveHealth (whose comments give each field's meaning and
// default), read by health's checker and, through the record, on the
// request path.
type Passive struct {
	ConsecutiveFailures int // 0: off
	Consecutive5xx      int // 0: off
	EjectFor            time.Duration
	MaxEjectFor         time.Duration
	MaxEjectedPercent   int
}
