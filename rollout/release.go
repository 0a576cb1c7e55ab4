package rollout

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"canaryd/config"
)

// PoolRelease is what a pool holds now, as releases go.
type PoolRelease struct {
	// ID changes when the pool gets a new release: "v:" and its version
	// when it has one; without, its listed instances (a static pool) or
	// the count of times it filled up after being empty (a dynamic one:
	// instances that come and go within one release do not change it).
	// "": the pool has no instances (a dynamic pool's not come yet).
	ID string
	// Version is the release's version; "" when none is known.
	Version string
	// Instances is how many instances the pool has.
	Instances int
}

// Releases reports what a route's pool holds now. The caller (the
// pipeline) answers from its own view of the dynamic pools; nil answers
// from the file (FileRelease).
type Releases func(r *config.Route, pool string) PoolRelease

// FileRelease is a pool's release as the file lists it.
func FileRelease(p config.Pool) PoolRelease {
	if p.Version != "" {
		return PoolRelease{ID: "v:" + p.Version, Version: p.Version, Instances: len(p.URLs())}
	}
	var inst []string
	for _, u := range p.URLs() {
		inst = append(inst, u.String())
	}
	sort.Strings(inst)
	return PoolRelease{ID: strings.Join(inst, "\x00"), Instances: len(inst)}
}

// releaseID identifies what a rollout releases: its two roles and what
// the canary holds. For static pools without versions it is what it
// always was (state files of earlier versions resume).
func releaseID(stable, canary, canaryID string) string {
	sum := sha256.Sum256([]byte(stable + "\x00" + canary + "\x00" + canaryID))
	return hex.EncodeToString(sum[:6])
}

// Release identifies what a route's rollout releases, from the file.
func Release(r *config.Route) string {
	for _, p := range r.Pools {
		if p.Name == r.Rollout.Canary {
			return releaseID(r.Rollout.Stable, r.Rollout.Canary, FileRelease(p).ID)
		}
	}
	return releaseID(r.Rollout.Stable, r.Rollout.Canary, "")
}

// emptyMark is a stable pool's ID recorded while it has no instances
// (StableRelease; "" is a state file written before roles could swap).
const emptyMark = "(empty)"

func orEmpty(id string) string {
	if id == "" {
		return emptyMark
	}
	return id
}

// describe names a pool's release for a reason: "v2.4.0 (3 instances)".
func describe(pool string, r PoolRelease) string {
	v := "pool " + pool
	if r.Version != "" {
		v = fmt.Sprintf("%s of pool %s", r.Version, pool)
	}
	return fmt.Sprintf("%s (%d instances)", v, r.Instances)
}

// rolesLocked are the rollout's current roles: the state's when they are
// the file's two pools (swapped after a promotion), else the file's.
// c.mu held.
func (c *controller) rolesLocked() (stable, canary string) {
	s, k := c.st.Stable, c.st.Canary
	if (s == c.spec.Stable && k == c.spec.Canary) || (s == c.spec.Canary && k == c.spec.Stable) {
		return s, k
	}
	return c.spec.Stable, c.spec.Canary
}

// releaseFor is the release the pools hold now under the given roles.
// c.mu held.
func (c *controller) releaseForLocked(stable, canary string) string {
	return releaseID(stable, canary, c.pools[canary].ID)
}

// setPools takes what the route's two pools hold now. c.mu held.
func (c *controller) setPoolsLocked(r *config.Route, rel Releases) {
	c.pools = map[string]PoolRelease{}
	for _, p := range r.Pools {
		if p.Name != c.spec.Stable && p.Name != c.spec.Canary {
			continue
		}
		if rel != nil {
			c.pools[p.Name] = rel(r, p.Name)
		} else {
			c.pools[p.Name] = FileRelease(p)
		}
	}
}

// syncReleaseLocked is the leader's answer to what the pools hold now
// (c.pools): the same release goes on; a new one in the canary starts at
// the first step; after a promotion, a new release in the pool at 0%
// swaps the roles (the promoted pool is the stable one now) and starts;
// a canary pool with no instances has no release, and the rollout waits
// for one, idle, with the stable pool serving everything. It reports
// whether the state changed. c.mu held.
func (c *controller) syncReleaseLocked(now time.Time) bool {
	stable, canary := c.rolesLocked()
	sr, cr := c.pools[stable], c.pools[canary]
	if c.st.Phase == Promoted && sr.ID == "" && c.st.StableRelease != "" && c.st.StableRelease != emptyMark {
		// The old group left: whatever fills the pool next is a new
		// release (a pool without versions has no other way to say so).
		c.st.StableRelease, c.st.StableVersion = emptyMark, ""
		return true
	}
	if c.st.Phase == Promoted && sr.ID != "" && c.st.StableRelease != "" && sr.ID != c.st.StableRelease {
		c.startReleaseLocked(now, canary, stable, fmt.Sprintf("new release %s: the pools swap roles, %s (promoted) is the stable one now and %s the canary",
			describe(stable, sr), canary, stable))
		return true
	}
	release := releaseID(stable, canary, cr.ID)
	switch {
	case release == c.st.Release && c.st.Phase != "":
		changed := false
		if c.st.Phase != Promoted && c.st.Phase != Baking && c.st.StableRelease != orEmpty(sr.ID) {
			// The stable pool's churn before a promotion is no release.
			// (During the bake it is the next release: it swaps the roles
			// once the bake ends.)
			c.st.StableRelease, changed = orEmpty(sr.ID), true
		}
		if c.st.StableVersion != sr.Version || c.st.CanaryVersion != cr.Version {
			c.st.StableVersion, c.st.CanaryVersion, changed = sr.Version, cr.Version, true
		}
		return changed
	case cr.ID == "" && c.st.Phase.UnderWay():
		// The canary's instances left in the middle of its rollout: no new
		// release; the analysis sees a canary with no instance available.
		return false
	case cr.ID == "":
		from := c.st.Phase
		if from == "" {
			from = Idle
		}
		c.st = State{Route: c.route, Release: release, Strategy: c.spec.Strategy, Stable: stable, Canary: canary,
			Phase: Idle, StableRelease: orEmpty(sr.ID), StableVersion: sr.Version, History: c.st.History, PastStables: c.st.PastStables}
		c.publishWeightLocked()
		c.transitionLocked(now, from, fmt.Sprintf("waiting for a release: the canary pool %s has no instances yet; %s serves everything", canary, stable), nil)
		return true
	}
	c.startReleaseLocked(now, stable, canary, "new release "+describe(canary, cr)+": the canary's instances or the pools changed")
	return true
}
