package discovery

import (
	"context"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"canaryd/config"
	"canaryd/internal/dnsmasqtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every kind of answer a real DNS server gives, classified.
func TestResolveAgainstDnsmasq(t *testing.T) {
	d := dnsmasqtest.Start(t, "127.0.0.2 web.test\n127.0.0.3 web.test\n::1 six.test\n127.0.0.7 one.test\n127.0.0.8 two.test\n",
		"--srv-host=_http._tcp.web.test,one.test,8081,0,10",
		"--srv-host=_http._tcp.web.test,two.test,8082,0,20",
		"--srv-host=_http._tcp.web.test,web.test,9999,10,10", // a backup priority: not used
		"--srv-host=_http._tcp.gone.test,nowhere.test,8080,0,10",
		"--txt-record=empty.test,nothing here")
	c := &dns.Client{Timeout: time.Second}
	for _, tc := range []struct {
		name   string
		port   int
		want   []string
		result string
	}{
		{"web.test", 8080, []string{"127.0.0.2:8080", "127.0.0.3:8080"}, ResultOK},
		{"six.test", 8080, []string{"[::1]:8080"}, ResultOK},
		{"_http._tcp.web.test", 0, []string{"127.0.0.7:8081", "127.0.0.8:8082"}, ResultOK},
		{"_http._tcp.gone.test", 0, nil, ResultEmpty}, // its target has no address
		{"nope.test", 8080, nil, ResultNXDomain},
		{"empty.test", 8080, nil, ResultEmpty},
	} {
		got, result, why := resolve(context.Background(), c, d.Addr, config.Discovery{DNS: tc.name, Port: tc.port})
		if result != tc.result || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v %s (%s); want %v %s", tc.name, got, result, why, tc.want, tc.result)
		}
	}
	d.RunServFail()
	if got, result, _ := resolve(context.Background(), c, d.Addr, config.Discovery{DNS: "web.test", Port: 8080}); result != ResultServFail {
		t.Errorf("a validating resolver in front of a broken zone: %v %s; want servfail", got, result)
	}
	d.Stop()
	if got, result, why := resolve(context.Background(), c, d.Addr, config.Discovery{DNS: "web.test", Port: 8080}); result != ResultError || why == "" {
		t.Errorf("resolver down: %v %s (%s); want error", got, result, why)
	}
}

// history records every set the sink gets.
type history struct {
	mu   sync.Mutex
	sets [][]string
	ver  string
}

func (h *history) SetInstances(_, _ string, urls []*url.URL, version string) {
	var s []string
	for _, u := range urls {
		s = append(s, u.Host)
	}
	h.mu.Lock()
	h.sets = append(h.sets, s)
	h.ver = version
	h.mu.Unlock()
}

func (h *history) last() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.sets) == 0 {
		return nil
	}
	return h.sets[len(h.sets)-1]
}

func (h *history) all() [][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.sets)
}

type counted struct {
	mu      sync.Mutex
	results map[string]int
	n       int
}

func (c *counted) Resolution(_, _, result string) {
	c.mu.Lock()
	if c.results == nil {
		c.results = map[string]int{}
	}
	c.results[result]++
	c.mu.Unlock()
}
func (c *counted) Instances(_, _ string, n int)     { c.mu.Lock(); c.n = n; c.mu.Unlock() }
func (c *counted) Success(_, _ string, _ time.Time) {}
func (c *counted) Forget(_, _ string)               {}
func (c *counted) count(result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.results[result]
}
func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hostsOf(ips ...string) string {
	var b strings.Builder
	for _, ip := range ips {
		b.WriteString(ip + " web.test\n")
	}
	return b.String()
}

// The safety rules against a real DNS server whose answers change: a big
// drop applies in steps, an empty answer only after empty_after
// resolutions in a row, resolver errors keep the last good set, and the
// first answer after an error applies.
func TestSafetyRules(t *testing.T) {
	d := dnsmasqtest.Start(t, hostsOf("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"))
	h, m := &history{}, &counted{}
	rs := New(h, m, zap.NewNop(), nil, "")
	defer rs.Close()
	spec := config.Discovery{DNS: "web.test", Port: 80, Resolver: d.Addr, Interval: config.Duration(50 * time.Millisecond),
		EmptyAfter: 3, MaxDropPercent: 50, Version: "v2", Scheme: "http"}
	cfg := &config.Config{Routes: []config.Route{{Name: "web", Pools: []config.Pool{{Name: "green", Discovery: &spec}}}}}
	rs.Start(cfg)
	all4 := []string{"127.0.0.1:80", "127.0.0.2:80", "127.0.0.3:80", "127.0.0.4:80"}
	waitUntil(t, "the first set", func() bool { return slices.Equal(h.last(), all4) })
	if h.ver != "v2" {
		t.Errorf("version %q", h.ver)
	}

	// Three of four gone at once: two removed now (50%), the third at
	// the next resolution.
	n := len(h.all())
	d.SetHosts(hostsOf("127.0.0.4"))
	d.HUP()
	waitUntil(t, "the drop to end", func() bool { return slices.Equal(h.last(), []string{"127.0.0.4:80"}) })
	steps := h.all()[n:]
	if len(steps) != 2 || len(steps[0]) != 2 {
		t.Errorf("a drop of 3 of 4 at max_drop_percent 50 went %v; want two steps (2 instances, then 1)", steps)
	}

	// Resolver down, then SERVFAIL: the last good set stays.
	d.Stop()
	waitUntil(t, "errors counted", func() bool { return m.count(ResultError) >= 3 })
	d.RunServFail()
	waitUntil(t, "SERVFAIL counted", func() bool { return m.count(ResultServFail) >= 3 })
	if got := h.last(); !slices.Equal(got, []string{"127.0.0.4:80"}) {
		t.Fatalf("after errors the set is %v", got)
	}

	// Back, with the name gone (NXDOMAIN): kept for empty_after - 1
	// resolutions, then empty.
	before := m.count(ResultNXDomain) // before the server can answer NXDOMAIN
	d.SetHosts(hostsOf())
	d.Run()
	waitUntil(t, "the pool to empty", func() bool { return len(h.last()) == 0 })
	if got := m.count(ResultNXDomain) - before; got < 3 {
		t.Errorf("the pool emptied after %d NXDOMAIN answers; want empty_after (3)", got)
	}

	// Back again: the whole set at once (from empty, nothing drops).
	d.SetHosts(hostsOf("127.0.0.5", "127.0.0.6"))
	d.HUP()
	waitUntil(t, "the new set", func() bool { return slices.Equal(h.last(), []string{"127.0.0.5:80", "127.0.0.6:80"}) })

	// A reload that changes the block restarts the resolver from the set
	// it had; one that removes it stops it.
	spec2 := spec
	spec2.Port = 81
	rs.Sync(&config.Config{Routes: []config.Route{{Name: "web", Pools: []config.Pool{{Name: "green", Discovery: &spec2}}}}})
	waitUntil(t, "the new port", func() bool { return slices.Equal(h.last(), []string{"127.0.0.5:81", "127.0.0.6:81"}) })
	rs.Sync(&config.Config{})
	n = len(h.all())
	time.Sleep(200 * time.Millisecond)
	if len(h.all()) != n {
		t.Error("a removed discovery block still resolves")
	}
}

// A start while the resolver is down serves the set the last run had
// applied (state_dir/discovery.json), for the same name, port and scheme
// only; the resolver takes over from it once it answers.
func TestRestartWithResolverDownServesTheLastSet(t *testing.T) {
	d := dnsmasqtest.Start(t, hostsOf("127.0.0.1", "127.0.0.2"))
	file := filepath.Join(t.TempDir(), "discovery.json")
	spec := config.Discovery{DNS: "web.test", Port: 80, Resolver: d.Addr, Interval: config.Duration(50 * time.Millisecond),
		EmptyAfter: 3, MaxDropPercent: 50, Scheme: "http"}
	cfg := &config.Config{Routes: []config.Route{{Name: "web", Pools: []config.Pool{{Name: "green", Discovery: &spec}}}}}
	h := &history{}
	rs := New(h, &counted{}, zap.NewNop(), nil, file)
	rs.Restore(cfg)
	rs.Start(cfg)
	waitUntil(t, "the first set", func() bool { return len(h.last()) == 2 })
	rs.Close()

	d.Stop()
	h2 := &history{}
	rs2 := New(h2, &counted{}, zap.NewNop(), nil, file)
	defer rs2.Close()
	rs2.Restore(cfg)
	if got := h2.last(); !slices.Equal(got, []string{"127.0.0.1:80", "127.0.0.2:80"}) {
		t.Fatalf("restored %v; want the last run's set", got)
	}
	rs2.Start(cfg)
	time.Sleep(200 * time.Millisecond) // resolutions fail: the set stays
	if n := len(h2.all()); n != 1 {
		t.Fatalf("with the resolver down the set changed: %v", h2.all())
	}
	d.SetHosts(hostsOf("127.0.0.2", "127.0.0.3"))
	d.Run()
	waitUntil(t, "the resolver's set", func() bool { return slices.Equal(h2.last(), []string{"127.0.0.2:80", "127.0.0.3:80"}) })

	// Another name: the cached set is not used.
	other := spec
	other.DNS = "other.test"
	h3 := &history{}
	rs3 := New(h3, &counted{}, zap.NewNop(), nil, file)
	rs3.Restore(&config.Config{Routes: []config.Route{{Name: "web", Pools: []config.Pool{{Name: "green", Discovery: &other}}}}})
	if got := h3.all(); len(got) != 0 {
		t.Fatalf("a set cached for web.test was restored for other.test: %v", got)
	}
	rs3.Close()
}
