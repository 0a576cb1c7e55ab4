// Package discovery finds the instances of pools with a discovery block
// in DNS, again every interval, off the request path, and hands each
// pool's set to a Sink when it changes. It never lets the DNS take a
// serving pool down: on any resolver error the last good set stays; an
// empty answer applies only once it has persisted for empty_after
// resolutions; and a large drop applies in steps of max_drop_percent.
package discovery

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"canaryd/config"
	"canaryd/panics"
)

// Sink gets a pool's whole set when it changes: its instances, sorted,
// and the version discovery.version names.
type Sink interface {
	SetInstances(route, pool string, instances []*url.URL, version string)
}

// Metrics receives what discovery exports (package metrics' Discovery).
type Metrics interface {
	// Resolution counts one resolution by result: ok, empty, nxdomain,
	// servfail or error (timeout, refused, unreachable).
	Resolution(route, pool, result string)
	// Instances is the pool's discovered instances now (as applied).
	Instances(route, pool string, n int)
	// Success is when a resolution last answered (ok, or empty).
	Success(route, pool string, at time.Time)
	// Forget drops a pool's series (its discovery left the config).
	Forget(route, pool string)
}

// Results of a resolution, as labelled.
const (
	ResultOK       = "ok"
	ResultEmpty    = "empty"
	ResultNXDomain = "nxdomain"
	ResultServFail = "servfail"
	ResultError    = "error"
)

// Resolvers runs one resolver per discovered pool.
type Resolvers struct {
	sink    Sink
	metrics Metrics
	log     *zap.Logger
	onPanic panics.Handler
	// resolvConf is where the system's resolver is read from.
	resolvConf string
	// cache keeps the applied sets across restarts.
	cache *cache

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards the fields below it.
	mu      sync.Mutex
	started bool
	running map[key]*resolver
}

type key struct{ route, pool string }

// New returns resolvers that report to sink and m; Start runs them.
// cacheFile keeps each pool's last applied set across restarts ("": none).
func New(sink Sink, m Metrics, log *zap.Logger, onPanic panics.Handler, cacheFile string) *Resolvers {
	ctx, cancel := context.WithCancel(context.Background())
	return &Resolvers{sink: sink, metrics: m, log: log, onPanic: onPanic, resolvConf: "/etc/resolv.conf",
		ctx: ctx, cancel: cancel, running: map[key]*resolver{}, cache: openCache(cacheFile)}
}

// Restore hands the Sink the last applied set of every discovered pool of
// cfg that the cache holds (for the same name, port and scheme), before
// anything resolves: a process that starts while its resolver is down
// serves the last good set it had. Start's resolvers start from it.
func (rs *Resolvers) Restore(cfg *config.Config) {
	for _, r := range cfg.Routes {
		for _, p := range r.Pools {
			if p.Discovery == nil {
				continue
			}
			k := key{r.Name, p.Name}
			if addrs, ok := rs.cache.get(k, *p.Discovery); ok {
				rs.sink.SetInstances(k.route, k.pool, urlsOf(addrs, p.Discovery.Scheme), p.Discovery.Version)
			}
		}
	}
}

func urlsOf(addrs []string, scheme string) []*url.URL {
	urls := make([]*url.URL, 0, len(addrs))
	for _, a := range addrs {
		urls = append(urls, &url.URL{Scheme: scheme, Host: a})
	}
	return urls
}

// Start resolves the pools of cfg and follows Sync's configs after it.
func (rs *Resolvers) Start(cfg *config.Config) {
	rs.mu.Lock()
	rs.started = true
	rs.mu.Unlock()
	rs.Sync(cfg)
}

// Sync runs exactly the resolvers of cfg's discovered pools: a new pool
// starts one, a pool whose discovery block changed restarts its own (the
// set applied so far is its starting point), a pool gone stops its own.
func (rs *Resolvers) Sync(cfg *config.Config) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if !rs.started || rs.ctx.Err() != nil {
		return
	}
	want := map[key]config.Discovery{}
	for _, r := range cfg.Routes {
		for _, p := range r.Pools {
			if p.Discovery != nil {
				want[key{r.Name, p.Name}] = *p.Discovery
			}
		}
	}
	for k, res := range rs.running {
		if d, ok := want[k]; !ok || !reflect.DeepEqual(d, res.spec) {
			res.stop()
			delete(rs.running, k)
			if !ok {
				rs.metrics.Forget(k.route, k.pool)
			} else {
				want[k] = d
				rs.startLocked(k, d, res.snapshot())
			}
			delete(want, k)
		}
	}
	keep := map[key]bool{}
	for k, d := range want {
		keep[k] = true
		if _, ok := rs.running[k]; !ok {
			applied, _ := rs.cache.get(k, d)
			rs.startLocked(k, d, applied)
		}
	}
	for k := range rs.running {
		keep[k] = true
	}
	rs.cache.retain(keep)
}

func (rs *Resolvers) startLocked(k key, d config.Discovery, applied []string) {
	ctx, cancel := context.WithCancel(rs.ctx)
	// A set it starts from (the cache's, or the one before a change of
	// the block) was handed to the Sink already.
	res := &resolver{rs: rs, key: k, spec: d, cancel: cancel, done: make(chan struct{}), applied: applied, published: applied != nil}
	rs.running[k] = res
	rs.wg.Add(1)
	go func() {
		defer rs.wg.Done()
		defer close(res.done)
		defer panics.Recover(rs.onPanic, "dns discovery")
		res.run(ctx)
	}()
}

// Close stops every resolver and waits for them.
func (rs *Resolvers) Close() {
	rs.cancel()
	rs.wg.Wait()
}

// resolver resolves one pool's name.
type resolver struct {
	rs     *Resolvers
	key    key
	spec   config.Discovery
	cancel context.CancelFunc
	done   chan struct{}

	// Owned by run's goroutine, read by snapshot after stop.
	applied    []string // host:port, sorted: the set handed to the Sink
	published  bool
	emptyRun   int    // resolutions in a row that found nothing
	lastResult string // logged once per change of result
}

func (r *resolver) stop() {
	r.cancel()
	<-r.done
}

func (r *resolver) snapshot() []string { return r.applied }

func (r *resolver) run(ctx context.Context) {
	server, err := r.server()
	if err != nil {
		r.rs.log.Error("dns discovery cannot start; the pool keeps the instances it has", zap.String("route", r.key.route),
			zap.String("pool", r.key.pool), zap.Error(err))
		return
	}
	c := &dns.Client{Timeout: min(2*time.Second, r.spec.Interval.D())}
	for {
		r.once(ctx, c, server)
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.spec.Interval.D()):
		}
	}
}

// server is the DNS server to ask: the block's, or the system's first.
func (r *resolver) server() (string, error) {
	if r.spec.Resolver != "" {
		return r.spec.Resolver, nil
	}
	cc, err := dns.ClientConfigFromFile(r.rs.resolvConf)
	if err != nil || len(cc.Servers) == 0 {
		return "", fmt.Errorf("no resolver: %s has no nameserver (%v); set discovery.resolver to host:port", r.rs.resolvConf, err)
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}

// once runs one resolution and applies what it found, within the rules.
func (r *resolver) once(ctx context.Context, c *dns.Client, server string) {
	found, result, why := resolve(ctx, c, server, r.spec)
	rs, k := r.rs, r.key
	rs.metrics.Resolution(k.route, k.pool, result)
	fields := []zap.Field{zap.String("route", k.route), zap.String("pool", k.pool), zap.String("dns", r.spec.DNS), zap.String("resolver", server)}
	// Each message is logged once per change of result, not at every
	// resolution.
	logOnce := func(warn bool, msg string, extra ...zap.Field) {
		if r.lastResult == result+msg {
			return
		}
		r.lastResult = result + msg
		all := append(append(fields, zap.String("result", result)), extra...)
		if warn {
			rs.log.Warn(msg, all...)
		} else {
			rs.log.Info(msg, all...)
		}
	}
	const warn, info = true, false
	switch result {
	case ResultServFail, ResultError:
		logOnce(warn, "dns discovery failed; keeping the last good instances", zap.String("error", why), zap.Int("instances", len(r.applied)))
		return
	}
	rs.metrics.Success(k.route, k.pool, time.Now())
	if len(found) == 0 {
		r.emptyRun++
		if len(r.applied) > 0 && r.emptyRun < r.spec.EmptyAfter {
			logOnce(warn, "dns discovery found no instance; keeping the last good ones until empty_after resolutions in a row say so",
				zap.Int("in_a_row", r.emptyRun), zap.Int("empty_after", r.spec.EmptyAfter), zap.Int("instances", len(r.applied)))
			return
		}
		if len(r.applied) > 0 {
			logOnce(warn, "dns discovery found no instance empty_after times in a row; the pool is empty now", zap.Int("empty_after", r.spec.EmptyAfter))
		}
		r.apply(nil)
		return
	}
	r.emptyRun = 0
	next := found
	if n := len(r.applied); n > 0 {
		var removed []string
		for _, a := range r.applied {
			if !slices.Contains(found, a) {
				removed = append(removed, a)
			}
		}
		allowed := max(1, n*r.spec.MaxDropPercent/100)
		if len(removed) > allowed {
			// Keep the removed ones past the allowance for the next
			// resolutions: a blip that drops most of a pool's names must
			// not take most of its capacity at once.
			next = append(slices.Clone(found), removed[allowed:]...)
			sort.Strings(next)
			logOnce(warn, "dns discovery dropped more than max_drop_percent of the pool's instances at once; removing them in steps",
				zap.Int("dropped", len(removed)), zap.Int("removed_now", allowed), zap.Int("max_drop_percent", r.spec.MaxDropPercent))
			r.apply(next)
			return
		}
	}
	logOnce(info, "dns discovery resolved", zap.Int("instances", len(next)))
	r.apply(next)
}

// apply hands the Sink a set that differs from the one applied (and the
// first set, whatever it is).
func (r *resolver) apply(addrs []string) {
	if r.published && slices.Equal(addrs, r.applied) {
		return
	}
	r.applied, r.published = addrs, true
	r.rs.metrics.Instances(r.key.route, r.key.pool, len(addrs))
	r.rs.sink.SetInstances(r.key.route, r.key.pool, urlsOf(addrs, r.spec.Scheme), r.spec.Version)
	if err := r.rs.cache.put(r.key, r.spec, addrs); err != nil {
		r.rs.log.Warn("cannot save the discovered set for the next start", zap.String("route", r.key.route), zap.String("pool", r.key.pool), zap.Error(err))
	}
}

// resolve asks server for the spec's name: A and AAAA records with the
// spec's port, or SRV records (the lowest priority; targets resolved
// through the answer's additional records or a query of their own). It
// returns host:port strings, sorted and unique, and the result's label
// (and why, for an error).
func resolve(ctx context.Context, c *dns.Client, server string, spec config.Discovery) ([]string, string, string) {
	name := dns.Fqdn(spec.DNS)
	if strings.HasPrefix(spec.DNS, "_") {
		return resolveSRV(ctx, c, server, name)
	}
	var out []string
	empty := 0
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		ips, result, why := query(ctx, c, server, name, qt)
		switch result {
		case ResultOK:
			for _, ip := range ips {
				out = append(out, net.JoinHostPort(ip, strconv.Itoa(spec.Port)))
			}
		case ResultEmpty, ResultNXDomain:
			empty++
			if empty == 2 {
				return nil, result, ""
			}
		default:
			return nil, result, why
		}
	}
	return uniq(out), ResultOK, ""
}

func resolveSRV(ctx context.Context, c *dns.Client, server, name string) ([]string, string, string) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeSRV)
	in, result, why := exchange(ctx, c, server, m)
	if result != ResultOK {
		return nil, result, why
	}
	var srvs []*dns.SRV
	for _, rr := range in.Answer {
		if s, ok := rr.(*dns.SRV); ok && s.Target != "." {
			srvs = append(srvs, s)
		}
	}
	if len(srvs) == 0 {
		return nil, ResultEmpty, ""
	}
	lowest := srvs[0].Priority
	for _, s := range srvs {
		lowest = min(lowest, s.Priority)
	}
	extra := map[string][]string{}
	for _, rr := range in.Extra {
		switch a := rr.(type) {
		case *dns.A:
			extra[strings.ToLower(a.Hdr.Name)] = append(extra[strings.ToLower(a.Hdr.Name)], a.A.String())
		case *dns.AAAA:
			extra[strings.ToLower(a.Hdr.Name)] = append(extra[strings.ToLower(a.Hdr.Name)], a.AAAA.String())
		}
	}
	var out []string
	for _, s := range srvs {
		if s.Priority != lowest {
			continue
		}
		ips := extra[strings.ToLower(s.Target)]
		if len(ips) == 0 {
			for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
				got, result, why := query(ctx, c, server, s.Target, qt)
				switch result {
				case ResultOK:
					ips = append(ips, got...)
				case ResultEmpty, ResultNXDomain:
				default:
					return nil, result, why
				}
			}
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, strconv.Itoa(int(s.Port))))
		}
	}
	if len(out) == 0 {
		return nil, ResultEmpty, ""
	}
	return uniq(out), ResultOK, ""
}

// query asks for one type of address record of name.
func query(ctx context.Context, c *dns.Client, server, name string, qt uint16) ([]string, string, string) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qt)
	in, result, why := exchange(ctx, c, server, m)
	if result != ResultOK {
		return nil, result, why
	}
	var out []string
	for _, rr := range in.Answer {
		switch a := rr.(type) {
		case *dns.A:
			out = append(out, a.A.String())
		case *dns.AAAA:
			out = append(out, a.AAAA.String())
		}
	}
	if len(out) == 0 {
		return nil, ResultEmpty, ""
	}
	return out, ResultOK, ""
}

// exchange sends m over UDP (TCP when the answer is truncated) and
// classifies the answer.
func exchange(ctx context.Context, c *dns.Client, server string, m *dns.Msg) (*dns.Msg, string, string) {
	m.RecursionDesired = true
	in, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && in.Truncated {
		tcp := *c
		tcp.Net = "tcp"
		in, _, err = tcp.ExchangeContext(ctx, m, server)
	}
	if err != nil {
		return nil, ResultError, err.Error()
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
		return in, ResultOK, ""
	case dns.RcodeNameError:
		return nil, ResultNXDomain, ""
	case dns.RcodeServerFailure:
		return nil, ResultServFail, "SERVFAIL"
	}
	return nil, ResultError, dns.RcodeToString[in.Rcode]
}

func uniq(xs []string) []string {
	sort.Strings(xs)
	return slices.Compact(xs)
}
