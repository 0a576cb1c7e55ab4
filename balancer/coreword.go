//go:build !race

package balancer

// coreWord is a word only the goroutine pinned to one core touches; see
// coreRun.
type coreWord struct{ v uint64 }

func (w *coreWord) Load() uint64   { return w.v }
func (w *coreWord) Store(v uint64) { w.v = v }
