//go:build race

package balancer

import "sync/atomic"

// coreWord is atomic under the race detector: pinning to a core orders its
// users, but the detector does not model that and would report a race.
type coreWord struct{ v atomic.Uint64 }

func (w *coreWord) Load() uint64   { return w.v.Load() }
func (w *coreWord) Store(v uint64) { w.v.Store(v) }
