package memlimit

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		floor, scanned uint64
		want           int
	}{
		{32 << 20, 0, 800},         // nothing live yet: the runtime's minimum goal made the floor
		{32 << 20, 1 << 10, 800},   // a near-empty heap: the same (the minimum goal dominates)
		{32 << 20, 2 << 20, 800},   // (2 MiB × 16 = 32 MiB either way)
		{32 << 20, 3 << 20, 800},   // 966 would reach 32 MiB from 3 MiB, but the minimum goal (4 MiB × 8) reaches it first
		{32 << 20, 8 << 20, 300},   // over 4 MiB the live heap dominates: 8 MiB × 4
		{32 << 20, 16 << 20, 100},  // half the floor live: GOGC=100 already reaches it
		{32 << 20, 200 << 20, 100}, // a large config: plain GOGC=100
		{32 << 20, 12 << 20, 166},  // integer percent, rounded down
		{1 << 30, 1 << 20, 25600},  // 1 GiB floor: the minimum goal's percent
		{4 << 20, 1 << 20, 100},    // a floor at the runtime's own minimum: nothing to do
	} {
		if got := Percent(c.floor, c.scanned); got != c.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", c.floor, c.scanned, got, c.want)
		}
	}
}

func read(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// waitPercent collects until the floor's hook, which runs after a
// collection on the finalizer goroutine, has set GOGC as wanted.
func waitPercent(t *testing.T, ok func(uint64) bool, what string) {
	t.Helper()
	for range 200 {
		runtime.GC()
		if ok(read("/gc/gogc:percent")) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("GOGC is %d after 200 collections, want %s", read("/gc/gogc:percent"), what)
}

var sink []byte

// churn allocates n bytes of garbage in requests' sizes and returns how
// many collections ran meanwhile.
func churn(n int) uint64 {
	before := read("/gc/cycles/total:gc-cycles")
	for i := 0; i < n; i += 4096 {
		sink = make([]byte, 4096)
	}
	return read("/gc/cycles/total:gc-cycles") - before
}

// With a small live heap, the floor raises GOGC so that the heap goal is
// the floor, where it was a few MiB; a live heap over half the floor gets
// GOGC=100 back, and Stop restores it. (The goal is what is asserted: the
// number of collections for the same garbage, logged, also depends on how
// much CPU the collector gets, and on a loaded machine a starved cycle
// lets the heap run past its goal.)
func TestFloor(t *testing.T) {
	t.Setenv("GOGC", "") // the floor starts only when GOGC is not set
	runtime.GC()
	goalWithout := read("/gc/heap/goal:bytes")
	without := churn(256 << 20)

	f := StartFloor(32 << 20)
	if f == nil {
		t.Fatal("StartFloor returned nil with GOGC unset")
	}
	defer f.Stop()
	waitPercent(t, func(p uint64) bool { return p > 300 }, "over 300 with a small heap")
	goalWith := read("/gc/heap/goal:bytes")
	with := churn(256 << 20)
	t.Logf("heap goal %.1f MiB at GOGC=100, %.1f MiB with a 32 MiB floor (GOGC %d); collections for 256 MiB of 4 KB garbage: %d and %d",
		float64(goalWithout)/(1<<20), float64(goalWith)/(1<<20), read("/gc/gogc:percent"), without, with)
	if goalWithout > 16<<20 || goalWith < 30<<20 || goalWith > 40<<20 {
		t.Errorf("heap goal %d bytes at GOGC=100 and %d with the floor; want a few MiB, then about 32 MiB", goalWithout, goalWith)
	}

	live := make([][]byte, 24) // 24 MiB live: over half the floor
	for i := range live {
		live[i] = make([]byte, 1<<20)
		live[i][0] = 1
	}
	waitPercent(t, func(p uint64) bool { return p == 100 }, "100 with 24 MiB live")
	runtime.KeepAlive(live)
	live = nil
	waitPercent(t, func(p uint64) bool { return p > 300 }, "over 300 once the heap is small again")

	f.Stop()
	if p := read("/gc/gogc:percent"); p != 100 {
		t.Errorf("GOGC is %d after Stop, want 100", p)
	}
	runtime.GC()
	time.Sleep(50 * time.Millisecond) // the last armed hook runs and must not set it again
	runtime.GC()
	if p := read("/gc/gogc:percent"); p != 100 {
		t.Errorf("GOGC is %d after Stop and two collections, want 100", p)
	}
}

// GOGC in the environment is the operator's choice: no floor.
func TestFloorLeavesGOGC(t *testing.T) {
	t.Setenv("GOGC", "100")
	if f := StartFloor(32 << 20); f != nil {
		f.Stop()
		t.Fatal("StartFloor started with GOGC set")
	}
	var f *Floor
	f.Stop() // a nil Floor's Stop does nothing
}
