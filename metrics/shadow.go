package metrics

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"canaryd/evidence"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of a mirrored request, the result label of
// canaryd_shadow_requests_total. Every copy sent counts as "sent"; an
// answered copy that differs from the real answer counts "mismatch" too,
// and one that got no answer "error". A copy never sent (the queue was
// full, or the mirror was closing) is "dropped".
const (
	ShadowSent     = "sent"
	ShadowDropped  = "dropped"
	ShadowMismatch = "mismatch"
	ShadowError    = "error"
)

// Shadows holds the shadow-traffic accounting of every route that
// mirrors: the Prometheus series and, per route and pool, the in-process
// counts a rollout's shadow phase judges.
type Shadows struct {
	total *prometheus.CounterVec

	mu    sync.Mutex
	pools map[poolKey]*ShadowStats
}

// NewShadows registers canaryd_shadow_requests_total on reg.
func NewShadows(reg prometheus.Registerer) *Shadows {
	s := &Shadows{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_shadow_requests_total",
			Help: "Copies of requests mirrored to a pool (shadow traffic), by result: sent, dropped (queue full), mismatch (answered differently from the real answer), error (no answer).",
		}, []string{"route", "pool", "result"}),
		pools: map[poolKey]*ShadowStats{},
	}
	reg.MustRegister(s.total)
	return s
}

// Pool returns the stats of the copies a route sends to pool.
func (s *Shadows) Pool(route, pool string) *ShadowStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := poolKey{route, pool}
	if st := s.pools[k]; st != nil {
		return st
	}
	st := &ShadowStats{
		created:  time.Now(),
		sent:     s.total.WithLabelValues(route, pool, ShadowSent),
		dropped:  s.total.WithLabelValues(route, pool, ShadowDropped),
		mismatch: s.total.WithLabelValues(route, pool, ShadowMismatch),
		errors:   s.total.WithLabelValues(route, pool, ShadowError),
	}
	s.pools[k] = st
	return st
}

// Retain drops the stats and series of every route's pool not in keep
// (route → pools): what a reload removed.
func (s *Shadows) Retain(keep map[string][]string) { s.retain(keep, false) }

// RetainIn is Retain for the routes of keep only (Requests.RetainIn).
func (s *Shadows) RetainIn(keep map[string][]string) { s.retain(keep, true) }

func (s *Shadows) retain(keep map[string][]string, only bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.pools {
		ps, named := keep[k.route]
		if !(only && !named) && !(named && slices.Contains(ps, k.pool)) {
			delete(s.pools, k)
			s.total.DeletePartialMatch(prometheus.Labels{"route": k.route, "pool": k.pool})
		}
	}
}

// ShadowStats counts one route's copies to one pool. Lock-free.
type ShadowStats struct {
	created time.Time
	// copies are the copies' answers; primaries the real answers to the
	// same requests, so the two compare over exactly the same traffic.
	copies, primaries    evidence.Counter
	compared, mismatches atomic.Uint64

	sent, dropped, mismatch, errors prometheus.Counter
}

// Dropped counts a copy that was never sent.
func (st *ShadowStats) Dropped() { st.dropped.Inc() }

// Observe records one copy that was sent: its answer (status, 502 when it
// got none) and the real answer to the same request; compared is whether
// the two could be compared, mismatch whether they differed.
func (st *ShadowStats) Observe(status int, d time.Duration, primaryStatus int, primary time.Duration, failed, compared, mismatch bool) {
	st.sent.Inc()
	if failed {
		st.errors.Inc()
	}
	// The primary first: a reading (Shadow) takes the copies first, so it
	// never holds a copy whose primary it lacks.
	st.primaries.Record(primaryStatus, primary)
	if compared {
		st.compared.Add(1)
		if mismatch {
			st.mismatches.Add(1)
			st.mismatch.Inc()
		}
	}
	st.copies.Record(status, d)
}

// Shadow reads the counts.
func (st *ShadowStats) Shadow() evidence.Shadow {
	now := time.Now()
	c := st.copies.Counts(st.created, now)
	return evidence.Shadow{
		Copies: c, Primaries: st.primaries.Counts(st.created, now),
		Compared: st.compared.Load(), Mismatches: st.mismatches.Load(),
	}
}
