package app

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"canaryd/admin"
	"canaryd/config"
	"canaryd/discovery"
	"canaryd/metrics"
	"canaryd/registry"

	"github.com/prometheus/client_golang/prometheus"
)

// setupRegistry creates the registration API's registry: its store is a
// file in state_dir for a single process (leases expired here), the
// cluster's etcd in a cluster (leases are etcd's, and every member gets
// each change through its watch; the file is then the member's copy of
// etcd's set). The registrations a restart finds are handed to the
// pipeline before the first apply.
func (s *Server) setupRegistry(cfg *config.Config) error {
	o := registry.Options{Pools: s.pipe, Sink: sink{s.pipe, fromRegistrations}, OnPanic: s.panicked}
	f, loaded, err := registry.OpenFile(filepath.Join(cfg.StateDir, "instances.json"), nil)
	if err != nil {
		return err
	}
	if s.cluster != nil {
		// etcd is the truth; the file is this member's copy of it, served
		// until etcd answers (a restart while etcd is away must not empty
		// the registered pools).
		o.Store, o.Member, o.Cache = s.cluster, s.cluster.Member(), f
	} else {
		o.Store, o.Expire = f, true
	}
	s.registry = registry.New(o, loaded)
	s.registry.Publish()
	if s.cluster != nil {
		s.cluster.OnInstances(s.registry.Replace)
	}
	return nil
}

// Registered answers registry.Pools from the applied config.
func (p *pipeline) Registered(route, pool string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.routeLocked(route)
	if !ok {
		return &registry.Error{Kind: registry.ErrUnknown, Msg: fmt.Sprintf("no route %q (canaryd status lists the routes)", route)}
	}
	var names []string
	for _, cp := range r.Pools {
		names = append(names, cp.Name)
		if cp.Name != pool {
			continue
		}
		if cp.Registered {
			return nil
		}
		from := "the file's instances list"
		if cp.Discovery != nil {
			from = "DNS (discovery: " + cp.Discovery.DNS + ")"
		}
		return &registry.Error{Kind: registry.ErrNotRegistered, Msg: fmt.Sprintf("pool %q of route %q takes its instances from %s; to register instances into it, replace that with registered: true in the config", pool, route, from)}
	}
	return &registry.Error{Kind: registry.ErrUnknown, Msg: fmt.Sprintf("route %q has no pool %q; its pools are %s", route, pool, strings.Join(names, ", "))}
}

// ParseInstance is config's parser (registry.Pools).
func (p *pipeline) ParseInstance(s string) (*url.URL, error) { return config.ParseInstance(s) }

// Instances lists a pool's instances (admin.Instances).
func (s *Server) Instances(route, pool string) (admin.InstancesView, error) {
	cfg := s.pipe.config()
	var cp *config.Pool
	for i := range cfg.Routes {
		if cfg.Routes[i].Name != route {
			continue
		}
		for j := range cfg.Routes[i].Pools {
			if cfg.Routes[i].Pools[j].Name == pool {
				cp = &cfg.Routes[i].Pools[j]
			}
		}
		if cp == nil {
			return admin.InstancesView{}, &registry.Error{Kind: admin.ErrUnknownRoute, Msg: fmt.Sprintf("route %q has no pool %q", route, pool)}
		}
	}
	if cp == nil {
		return admin.InstancesView{}, &registry.Error{Kind: admin.ErrUnknownRoute, Msg: fmt.Sprintf("no route %q", route)}
	}
	src := "file"
	if sc, dyn := sourceOf(*cp); dyn {
		src = sc.String()
	}
	v := admin.InstancesView{Route: route, Pool: pool, Source: src, Instances: []admin.InstanceRecord{}}
	v.Version = s.pipe.poolVersion(route, *cp)
	healthy := map[string]bool{}
	var order []string
	if r := s.router.Load().Route(route); r != nil {
		for _, pl := range r.Pools {
			if pl.Name != pool {
				continue
			}
			for _, in := range pl.Instances {
				healthy[in.Addr] = in.Available()
				order = append(order, in.Addr)
			}
		}
	}
	if cp.Registered {
		for _, g := range s.registry.List(route, pool) {
			rec := admin.InstanceRecord{Addr: g.Addr, Version: g.Version, Source: src, Expires: g.Expires,
				Registered: g.Registered, Renewed: g.Renewed, From: g.From}
			if g.TTL > 0 {
				rec.TTL = g.TTL.String()
			}
			if h, ok := healthy[g.Addr]; ok {
				rec.Healthy = &h
			}
			v.Instances = append(v.Instances, rec)
		}
		return v, nil
	}
	for _, addr := range order {
		h := healthy[addr]
		v.Instances = append(v.Instances, admin.InstanceRecord{Addr: addr, Version: v.Version, Source: src, Healthy: &h})
	}
	return v, nil
}

// Register replaces or adds to a registered pool's set (admin.Instances).
func (s *Server) Register(route, pool string, replace bool, req admin.InstancesRequest, from string) (admin.InstancesView, error) {
	mode := registry.Add
	if replace {
		mode = registry.Replace
	}
	if _, err := s.registry.Register(route, pool, mode, registry.Request{Version: req.Version, Instances: req.Instances, TTL: req.TTL}, from); err != nil {
		return admin.InstancesView{}, adminError(err)
	}
	return s.Instances(route, pool)
}

// Deregister removes one instance from a registered pool (admin.Instances).
func (s *Server) Deregister(route, pool, addr string) (admin.InstancesView, error) {
	if _, err := s.registry.Remove(route, pool, addr); err != nil {
		return admin.InstancesView{}, adminError(err)
	}
	return s.Instances(route, pool)
}

// adminError maps the registry's errors to the API's, message unchanged.
func adminError(err error) error {
	kind := error(nil)
	switch {
	case errors.Is(err, registry.ErrUnknown):
		kind = admin.ErrUnknownRoute
	case errors.Is(err, registry.ErrNotRegistered), errors.Is(err, registry.ErrConflict):
		kind = admin.ErrConflict
	case errors.Is(err, registry.ErrInvalid):
		kind = admin.ErrInvalid
	case errors.Is(err, registry.ErrStore):
		kind = admin.ErrUnavailable
	default:
		return err
	}
	return &registry.Error{Kind: kind, Msg: err.Error()}
}

// poolVersion is a pool's version now (p.mu taken).
func (p *pipeline) poolVersion(route string, cp config.Pool) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.poolVersionLocked(route, cp)
}

// setupDiscovery creates the DNS resolvers of discovered pools (started
// with the background goroutines, synced on every reload), and hands the
// pipeline the sets they had at the last stop (state_dir/discovery.json)
// before the first apply: a start while the resolver is down serves them.
func (s *Server) setupDiscovery(cfg *config.Config, reg prometheus.Registerer) {
	s.discovery = discovery.New(sink{s.pipe, fromDNS}, metrics.NewDiscovery(reg), s.log.Named("discovery"), s.panicked,
		filepath.Join(cfg.StateDir, "discovery.json"))
	s.discovery.Restore(cfg)
}
