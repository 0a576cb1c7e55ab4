package rollout

import "time"

// PastStable is a release that was the stable one until Until.
type PastStable struct {
	// ID is the pool's release (PoolRelease.ID), Version its version.
	ID      string    `json:"id"`
	Version string    `json:"version,omitempty"`
	Until   time.Time `json:"until"`
}

// maxPastStables bounds the releases remembered.
const maxPastStables = 10

// retireStable remembers the stable pool's release as stable until now:
// a promotion replaced it. c.mu held.
func (c *controller) retireStableLocked(now time.Time) {
	id := c.st.StableRelease
	if id == "" || id == emptyMark {
		return
	}
	c.st.PastStables = append(c.st.PastStables, PastStable{ID: id, Version: c.st.StableVersion, Until: now})
	if n := len(c.st.PastStables); n > maxPastStables {
		c.st.PastStables = append([]PastStable(nil), c.st.PastStables[n-maxPastStables:]...)
	}
}

// wasStable finds the canary's release among those stable within
// rollout.fast_revert: by version when both have one, else by the
// release's identity (its instances, for a static pool). c.mu held.
func (c *controller) wasStableLocked(now time.Time, cr PoolRelease) (PastStable, bool) {
	w := c.spec.FastRevert.D()
	if w <= 0 || cr.ID == "" {
		return PastStable{}, false
	}
	for i := len(c.st.PastStables) - 1; i >= 0; i-- {
		ps := c.st.PastStables[i]
		if now.Sub(ps.Until) > w {
			break
		}
		if cr.Version != "" && ps.Version != "" && cr.Version == ps.Version || (cr.Version == "" || ps.Version == "") && cr.ID == ps.ID {
			return ps, true
		}
	}
	return PastStable{}, false
}
