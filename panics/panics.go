// Package panics is canaryd's one policy for a panic in a goroutine it
// starts: the panic is recovered (a background loop's bug must never take
// the proxy down with it) and handed, with its stack, to one Handler. The
// app's handler logs it, counts it (canaryd_internal_panics_total) and
// turns the process unready and unhealthy, so that an orchestrator
// replaces it: the loop that panicked is gone, and what it did (reloads,
// probes, webhooks) is no longer done. Panics of requests are net/http's
// and the proxy's to answer, not this package's.
//
// It imports only the standard library, so every package can use it.
package panics

import (
	"fmt"
	"os"
	"runtime/debug"
)

// Handler receives a recovered panic: the component whose goroutine it
// was, the value, and the goroutine's stack.
type Handler func(component string, value any, stack []byte)

// Go runs f in a new goroutine under Guard.
func Go(h Handler, component string, f func()) {
	go Guard(h, component, f)
}

// Guard runs f; a panic in it goes to h (nil: printed to stderr) and Guard
// returns normally.
func Guard(h Handler, component string, f func()) {
	defer Recover(h, component)
	f()
}

// Recover is Guard for a deferred call at the top of a goroutine:
// defer panics.Recover(h, "component").
func Recover(h Handler, component string) {
	v := recover()
	if v == nil {
		return
	}
	stack := debug.Stack()
	if h == nil {
		fmt.Fprintf(os.Stderr, "canaryd: panic in %s (recovered): %v\n%s", component, v, stack)
		return
	}
	// A handler that panics itself must not undo the recovery.
	defer func() {
		if v2 := recover(); v2 != nil {
			fmt.Fprintf(os.Stderr, "canaryd: panic in %s (recovered): %v\n%s\nand its handler panicked: %v\n", component, v, stack, v2)
		}
	}()
	h(component, v, stack)
}
