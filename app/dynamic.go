package app

import (
	"net/url"
	"slices"
	"strings"

	"go.uber.org/zap"

	"canaryd/config"
	"canaryd/rollout"
)

// Dynamic pools: instances that come from DNS (pools[].discovery) or from
// registrations (pools[].registered), not from the file. Their sources
// hand each pool's whole set to the pipeline (SetInstances); it keeps
// the latest set of every pool and applies it as a change of that one
// route: its table entry, its health checks and its rollout's release,
// in one apply, whatever the number of routes. A set for a pool the
// config does not make dynamic (yet, or any more) is kept and used the
// moment a reload does.

// source is where a dynamic pool's instances come from.
type source int

const (
	fromDNS source = iota
	fromRegistrations
)

func (s source) String() string {
	if s == fromDNS {
		return "dns"
	}
	return "registration"
}

// poolRef names a pool of a route.
type poolRef struct{ route, pool string }

// dynamicSet is a dynamic pool's instances now, sorted by address.
type dynamicSet struct {
	urls    []*url.URL
	version string
}

// sourceOf is where a pool's instances come from; ok false for a pool
// whose instances the file lists.
func sourceOf(p config.Pool) (source, bool) {
	switch {
	case p.Discovery != nil:
		return fromDNS, true
	case p.Registered:
		return fromRegistrations, true
	}
	return 0, false
}

// sink is one source's entry into the pipeline (registry.Sink,
// discovery.Sink).
type sink struct {
	p   *pipeline
	src source
}

func (s sink) SetInstances(route, pool string, urls []*url.URL, version string) {
	s.p.setInstances(s.src, route, pool, urls, version)
}

// setInstances takes a pool's new set from src and, when the applied
// config has that pool take its instances from src, applies it.
func (p *pipeline) setInstances(src source, route, pool string, urls []*url.URL, version string) {
	urls = slices.Clone(urls)
	slices.SortFunc(urls, func(a, b *url.URL) int { return strings.Compare(a.String(), b.String()) })
	p.mu.Lock()
	defer p.mu.Unlock()
	sets := p.dynamic[src]
	k := poolRef{route, pool}
	if old := sets[k]; old != nil && old.version == version && slices.EqualFunc(old.urls, urls, func(a, b *url.URL) bool { return a.String() == b.String() }) {
		return
	}
	sets[k] = &dynamicSet{urls: urls, version: version}
	if !p.applied {
		return // the first apply reads the sets
	}
	r, ok := p.routeLocked(route)
	if !ok {
		return
	}
	for _, cp := range r.Pools {
		if s, dyn := sourceOf(cp); dyn && s == src && cp.Name == pool {
			if _, err := p.applyLocked(change{routes: []string{route}, instances: true}); err != nil {
				p.log.Error("applying a pool's new instances failed; the last good set keeps serving", zap.String("route", route),
					zap.String("pool", pool), zap.Stringer("source", src), zap.Error(err))
			}
			return
		}
	}
}

// dynamicLocked is the set a dynamic pool serves now (nil: none yet).
// p.mu held.
func (p *pipeline) dynamicLocked(route string, cp config.Pool) *dynamicSet {
	src, ok := sourceOf(cp)
	if !ok {
		return nil
	}
	return p.dynamic[src][poolRef{route, cp.Name}]
}

// releaseOf is what a pool holds now, as a rollout sees releases
// (rollout.Releases). A dynamic pool without a version has one release
// for as long as it has instances: one that fills up after being empty
// is a new one (the rollout sees the empty pool in between). p.mu held.
func (p *pipeline) releaseOf(r *config.Route, pool string) rollout.PoolRelease {
	for _, cp := range r.Pools {
		if cp.Name != pool {
			continue
		}
		if _, dyn := sourceOf(cp); !dyn {
			return rollout.FileRelease(cp)
		}
		set := p.dynamicLocked(r.Name, cp)
		if set == nil || len(set.urls) == 0 {
			return rollout.PoolRelease{}
		}
		if set.version != "" {
			return rollout.PoolRelease{ID: "v:" + set.version, Version: set.version, Instances: len(set.urls)}
		}
		return rollout.PoolRelease{ID: "dynamic", Instances: len(set.urls)}
	}
	return rollout.PoolRelease{}
}

// poolVersion is the version a pool runs: the file's, its discovery's,
// or its registrations'. p.mu held.
func (p *pipeline) poolVersionLocked(route string, cp config.Pool) string {
	if set := p.dynamicLocked(route, cp); set != nil && len(set.urls) > 0 {
		return set.version
	}
	return cp.Version
}

// poolSource is a pool's source and version, for the admin view.
type poolSource struct{ source, version string }

// poolSources are a route's pools' sources and versions.
func (p *pipeline) poolSources(route string) map[string]poolSource {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.routeLocked(route)
	if !ok {
		return nil
	}
	out := make(map[string]poolSource, len(r.Pools))
	for _, cp := range r.Pools {
		src := "file"
		if sc, dyn := sourceOf(cp); dyn {
			src = sc.String()
		}
		out[cp.Name] = poolSource{source: src, version: p.poolVersionLocked(route, cp)}
	}
	return out
}
