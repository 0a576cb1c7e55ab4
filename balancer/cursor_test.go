package balancer

import (
	"runtime"
	"sync"
	"testing"
)

// takeConcurrently has g goroutines take n slots each from c and returns how
// often each slot came out.
func takeConcurrently(c *cursor, g, n int) []int {
	counts := make([][]int, g)
	var wg sync.WaitGroup
	for k := range g {
		counts[k] = make([]int, Slots)
		wg.Go(func() {
			for range n {
				counts[k][c.next()]++
			}
		})
	}
	wg.Wait()
	total := make([]int, Slots)
	for _, ck := range counts {
		for s, v := range ck {
			total[s] += v
		}
	}
	return total
}

// TestCursorHandsOutEverySlotOnce checks the accounting exactly: the slots
// handed out are the shared counter's range minus the runs cores still hold,
// nothing taken twice and nothing lost, whichever path the picks took.
func TestCursorHandsOutEverySlotOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		raced bool // start in runs, as after a race for the counter
		cores int  // 0: as if GOMAXPROCS grew after the table was built
	}{
		{"shared counter, may race", false, runtime.GOMAXPROCS(0)},
		{"runs per core", true, runtime.GOMAXPROCS(0)},
		{"cores beyond the table's", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &cursor{cores: make([]coreRun, tc.cores)}
			c.raced.Store(tc.raced)
			const g, n = 8, 5000
			got := takeConcurrently(c, g, n)

			want := make([]int, Slots)
			for s := uint64(0); s < c.shared.Load(); s++ {
				want[s%Slots]++
			}
			held := 0
			for i := range c.cores {
				run := &c.cores[i]
				for s := run.next.Load(); s < run.end.Load(); s++ {
					want[s%Slots]--
					held++
				}
				if left := run.end.Load() - run.next.Load(); left >= chunk {
					t.Errorf("core %d holds %d slots, want fewer than %d", i, left, chunk)
				}
			}
			for s := range Slots {
				if got[s] != want[s] {
					t.Fatalf("slot %d handed out %d times, want %d (counter %d, %d held by cores)",
						s, got[s], want[s], c.shared.Load(), held)
				}
			}
			if tc.raced && !c.raced.Load() {
				t.Error("the cursor went back from runs to the shared counter")
			}
		})
	}
}

// TestPicksStayInOrderUntilARace: requests that never overlap take the
// schedule in order, so every window of it, not just a full cycle, is exact.
func TestPicksStayInOrderUntilARace(t *testing.T) {
	c := &cursor{cores: make([]coreRun, runtime.GOMAXPROCS(0))}
	for i := range uint64(3 * Slots) {
		if got := c.next(); got != i%Slots {
			t.Fatalf("pick %d took slot %d", i, got)
		}
	}
	if c.raced.Load() {
		t.Fatal("one goroutine alone switched the cursor to runs")
	}
}

// TestRacingPicksKeepTheSplit: once cores race and take runs, a 90/10 split
// over whole cycles is still what the schedule gives, instance by instance,
// but for the runs the cores hold, each within a couple of requests.
func TestRacingPicksKeepTheSplit(t *testing.T) {
	r := newRouter(t, spec(t, "r", 3, 9000, 1000)).Load().Route("r")
	r.cursor.raced.Store(true)
	const g, n = 8, Slots / 8 * 5 // five cycles in all
	got := make([]map[*Instance]int, g)
	var wg sync.WaitGroup
	for k := range g {
		got[k] = map[*Instance]int{}
		wg.Go(func() {
			for range n {
				_, in := r.Pick(nil)
				got[k][in]++
			}
		})
	}
	wg.Wait()

	want := map[*Instance]int{}
	for s := range g * n {
		p := r.Pools[r.schedule[s%Slots]]
		want[p.Instances[r.turn[s%Slots]]]++
	}
	slack := 2 * (len(r.cursor.cores) + 1)
	for _, p := range r.Pools {
		for _, in := range p.Instances {
			sum := 0
			for k := range g {
				sum += got[k][in]
			}
			if d := sum - want[in]; d > slack || d < -slack {
				t.Errorf("%s %s: %d picks, want %d ± %d", p.Name, in.Addr, sum, want[in], slack)
			}
		}
	}
}
