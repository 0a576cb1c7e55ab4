package panics

import (
	"strings"
	"sync"
	"testing"
)

func TestGuardHandsThePanicOver(t *testing.T) {
	var got []string
	var stack string
	h := func(component string, v any, s []byte) {
		got = append(got, component+": "+v.(string))
		stack = string(s)
	}
	Guard(h, "probe", func() { panic("boom") })
	if len(got) != 1 || got[0] != "probe: boom" || !strings.Contains(stack, "TestGuardHandsThePanicOver") {
		t.Fatalf("got %v, stack:\n%s", got, stack)
	}
	Guard(h, "quiet", func() {})
	if len(got) != 1 {
		t.Fatalf("a goroutine without a panic was reported: %v", got)
	}
	// A handler that panics, and no handler: still recovered.
	Guard(func(string, any, []byte) { panic("handler") }, "x", func() { panic("boom") })
	Guard(nil, "x", func() { panic("boom") })
}

func TestGoRecoversInItsGoroutine(t *testing.T) {
	var wg sync.WaitGroup
	wg.Add(1)
	var component string
	Go(func(c string, _ any, _ []byte) { component = c; wg.Done() }, "sweeper", func() { panic(42) })
	wg.Wait()
	if component != "sweeper" {
		t.Fatalf("component %q", component)
	}
}
