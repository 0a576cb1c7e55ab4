package app

import (
	"errors"
	"time"

	"canaryd/panics"

	"go.uber.org/zap"
)

// panicked is the policy of package panics for every goroutine canaryd
// starts: the panic is logged with its stack and counted, and the process
// turns unready (/readyz 503: balancers stop sending) and unhealthy
// (/healthz 503: an orchestrator restarts it). The goroutine that panicked
// is gone, and whatever it did (reloads, probes, a rollout, webhooks) is
// no longer done: a process that only looks alive would be worse than one
// replaced. The data plane keeps serving what it has meanwhile.
func (s *Server) panicked(component string, v any, stack []byte) {
	s.panics.Inc(component)
	s.broken.CompareAndSwap(nil, &component)
	s.ready.Store(false)
	s.log.Error("panic in "+component+" (a bug; please report it): canaryd turns unready and unhealthy so that it is replaced; restart it",
		zap.String("component", component), zap.Any("panic", v), zap.ByteString("stack", stack))
}

// brokenBy names the first component that panicked ("" when none).
func (s *Server) brokenBy() string {
	if b := s.broken.Load(); b != nil {
		return *b
	}
	return ""
}

// stopBound bounds each shutdown step that waits on the rollouts and the
// cluster: normally they take milliseconds, but a goroutine that panicked
// holding one of their locks would hold up the drain for ever.
const stopBound = 5 * time.Second

// bounded runs a shutdown step, and goes on without it after stopBound.
func (s *Server) bounded(what string, f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		panics.Guard(s.panicked, what, f)
	}()
	select {
	case <-done:
	case <-time.After(stopBound):
		s.log.Error(what+" did not finish within "+stopBound.String()+" (a panic left it stuck?); going on with the shutdown",
			zap.String("broken_by", s.brokenBy()))
	}
}

// errWatcherPanicked ends a file watch whose goroutine panicked.
var errWatcherPanicked = errors.New("the file watch panicked (see the log)")

// errReloadLoopGone: Reload after the reload goroutine ended.
var errReloadLoopGone = errors.New("the reload goroutine has stopped (the process is shutting down, or it panicked: see the log); restart canaryd")
