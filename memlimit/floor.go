package memlimit

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// DefaultFloor is the heap goal canaryd keeps at least (32 MiB). A proxy
// with a small config keeps about 3 MiB live and allocates about 5 KB a
// request, so GOGC=100 alone (a goal of twice the live heap) collected 20
// times a second at 14,000 requests a second, and the collector's marking
// and assists were 3.8% of its CPU. At a 32 MiB goal it collects about
// twice a second, for 0.4% (docs/benchmarks.md). A live heap over half the
// floor (a large config) gets plain GOGC=100.
const DefaultFloor = 32 << 20

// Floor keeps the collector's heap goal at its size or more while the live
// heap is small, by raising GOGC after each collection to what gives that
// goal, and back to 100 as the live heap grows. Memory use is bounded as
// before: a soft memory limit (GOMEMLIMIT, or the cgroup's through Apply)
// caps the goal whatever GOGC says.
type Floor struct {
	bytes uint64

	mu      sync.Mutex // orders an adjustment and Stop
	stopped bool
	set     int // GOGC last set
	samples []metrics.Sample
}

// StartFloor starts keeping the heap goal at bytes or more, unless GOGC is
// set in the environment (the operator chose the trade-off). It returns
// nil when it did not start; Stop on a nil Floor does nothing.
func StartFloor(bytes uint64) *Floor {
	if os.Getenv("GOGC") != "" || bytes == 0 {
		return nil
	}
	f := &Floor{bytes: bytes, set: 100, samples: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
	}}
	f.adjust()
	f.arm()
	return f
}

// Stop puts GOGC back to 100 and stops following the heap. The hook armed
// for the next collection runs once more and does nothing.
func (f *Floor) Stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.stopped = true
		debug.SetGCPercent(100)
	}
}

// sentinel is garbage whose finalizer runs after each collection: the
// runtime's own signal that a cycle ended, with no goroutine polling.
type sentinel struct{ f *Floor }

func (f *Floor) arm() {
	s := &sentinel{f: f}
	runtime.SetFinalizer(s, func(s *sentinel) {
		if s.f.adjust() {
			s.f.arm()
		}
	})
}

// adjust sets GOGC so that the next goal, (live heap + stacks + globals) ×
// (1 + GOGC/100) as the runtime computes it, is the floor, never under 100.
// It reports false once stopped.
func (f *Floor) adjust() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	metrics.Read(f.samples)
	var roots uint64
	for _, s := range f.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			roots += s.Value.Uint64()
		}
	}
	// Any change applies: at most once a collection, and a threshold would
	// keep GOGC just above 100 once the live heap passed half the floor.
	if p := Percent(f.bytes, roots); p != f.set {
		f.set = p
		debug.SetGCPercent(p)
	}
	return true
}

// Percent is the GOGC that makes the heap goal floor bytes when the
// collector's work (live heap, stacks, globals) is scanned bytes, never
// under 100. The runtime also scales its minimum goal (4 MiB at GOGC=100)
// by GOGC, so for a near-empty heap the percent that makes that minimum
// the floor is the most it needs: more would put the goal past the floor.
func Percent(floor, scanned uint64) int {
	limit := floor * 100 / runtimeMinimum
	p := limit
	if scanned > 0 {
		p = min(p, floor*100/scanned-min(100, floor*100/scanned))
	}
	return int(max(p, 100))
}

// runtimeMinimum is the runtime's smallest heap goal at GOGC=100
// (runtime.defaultHeapMinimum).
const runtimeMinimum = 4 << 20
