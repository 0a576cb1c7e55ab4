package balancer

import (
	"runtime"
	"sync/atomic"
	_ "unsafe" // for go:linkname
)

// procPin and procUnpin are the runtime's own per-P pinning, the one sync.Pool
// uses: while pinned the goroutine cannot be preempted or moved, so the
// returned P index names a slot no other goroutine touches until unpin. The
// runtime keeps their signatures stable for outside callers (go.dev/issue/67401).
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

// chunk is how many schedule slots a core takes at once once the shared
// cursor is contended. Any run of a smooth schedule is within about one
// request of its target for every pool, so the size hardly moves the split;
// it sets how often a core touches the shared cache line, whose transfer
// between cores is the cost being avoided (about 150 ns on a VM).
const chunk = 64

// cursor hands out schedule slots. While requests do not overlap it is one
// shared counter taken a slot at a time, in schedule order, so the split is
// exact to the request. The first time two cores race for it (a failed
// compare-and-swap), the table switches for good to runs: each core takes
// chunk slots at once and serves its next picks from them without touching
// the shared cache line, which is what keeps picks from slowing down as cores
// are added. Every slot is still handed out once; the slots each core holds
// but has not used yet are the only departure from the exact split, within
// about one request per pool per core. The next table (a reload or an
// availability change) starts exact again.
type cursor struct {
	raced  atomic.Bool // read by every pick, written once: kept apart from shared
	cores  []coreRun
	_      [64]byte
	shared atomic.Uint64
	_      [56]byte
}

// coreRun is one core's run of slots [next, end). Only the goroutine pinned
// to that core reads or writes it, and pinning orders those goroutines the
// way it orders sync.Pool's per-P private slot, so plain loads and stores
// suffice (coreWord; atomic under the race detector, which cannot see that
// ordering). An atomic store would cost a locked XCHG on every pick.
type coreRun struct {
	next, end coreWord
	_         [48]byte // one cache line per core
}

func newCursor() *cursor {
	return &cursor{cores: make([]coreRun, runtime.GOMAXPROCS(0))}
}

// next returns the next slot, 0..Slots-1.
func (c *cursor) next() uint64 {
	if !c.raced.Load() {
		if n := c.shared.Load(); c.shared.CompareAndSwap(n, n+1) {
			return n % Slots
		}
		c.raced.Store(true)
	}
	p := procPin()
	if p >= len(c.cores) {
		// GOMAXPROCS grew after this table was built; the next table sizes
		// for it. Until then the extra cores share the counter.
		procUnpin()
		return (c.shared.Add(1) - 1) % Slots
	}
	run := &c.cores[p]
	n := run.next.Load()
	if n == run.end.Load() {
		end := c.shared.Add(chunk)
		run.end.Store(end)
		n = end - chunk
	}
	run.next.Store(n + 1)
	procUnpin()
	return n % Slots
}
