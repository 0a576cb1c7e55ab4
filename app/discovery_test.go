package app

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"canaryd/internal/dnsmasqtest"

	"github.com/prometheus/client_golang/prometheus"
)

// metricValue sums the samples of a counter or gauge whose labels
// contain match (`result="ok"`).
func metricValue(t *testing.T, reg *prometheus.Registry, name, match string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if !strings.Contains(strings.Join(labels, ","), match) {
				continue
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// namedAt is a backend on ip:port (several loopback addresses share one
// port: A records carry addresses, discovery.port the port).
func namedAt(t *testing.T, name, ip string, port int) *named {
	t.Helper()
	l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
	if err != nil {
		t.Fatal(err)
	}
	n := &named{}
	n.Server = &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.hits.Add(1)
		io.WriteString(w, name)
	})}}
	n.Start()
	t.Cleanup(n.Close)
	return n
}

// freePortOn is a port free on every one of ips.
func freePortOn(t *testing.T, ips ...string) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		free := true
		for _, ip := range ips {
			if l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port)); err != nil {
				free = false
			} else {
				l.Close()
			}
		}
		if free {
			return port
		}
	}
	t.Fatal("no port free on every address")
	return 0
}

// DNS discovery under steady load, against a real dnsmasq whose answers
// change: scale out, scale in, every instance replaced, the resolver
// down, SERVFAIL, NXDOMAIN, an empty answer, and a record pointing at an
// address where nothing listens. Not one request fails while the old
// instances still live; instances the DNS adds get traffic only once
// their first probe passes.
func TestDNSDiscoveryUnderLoad(t *testing.T) {
	long(t)
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.9"}
	port := freePortOn(t, ips...)
	inst := map[string]*named{}
	for _, ip := range ips[:6] {
		inst[ip] = namedAt(t, "i"+ip, ip, port)
	}
	hosts := func(ips ...string) string {
		var b strings.Builder
		for _, ip := range ips {
			fmt.Fprintf(&b, "%s web.test\n", ip)
		}
		return b.String()
	}
	d := dnsmasqtest.Start(t, hosts("127.0.0.1", "127.0.0.2"), "--txt-record=web.test,no addresses")
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
state_dir: %q
routes:
  - name: web
    health: { active: { path: /, interval: 100ms }, passive: { consecutive_failures: 0 } }
    pools:
      - name: green
        weight: 100
        discovery: { dns: web.test, port: %d, resolver: %q, interval: 100ms, empty_after: 10, max_drop_percent: 50, version: v2 }
`, filepath.Join(t.TempDir(), "state"), port, d.Addr))
	r := startRig(t, path)
	served := func() []string {
		var out []string
		for _, p := range r.srv.router.Load().Route("web").Pools {
			for _, in := range p.Instances {
				out = append(out, strings.TrimPrefix(strings.Split(in.URL.Host, ":")[0], ""))
			}
		}
		return out
	}
	waitServed := func(what string, want ...string) {
		t.Helper()
		r.waitFor(what, 10*time.Second, func() bool { return strings.Join(served(), ",") == strings.Join(want, ",") })
	}
	waitServed("the first answer", "127.0.0.1", "127.0.0.2")
	r.waitFor("the first instances in rotation", 5*time.Second, func() bool {
		for _, p := range r.srv.router.Load().Route("web").Pools {
			return p.Available() == 2
		}
		return false
	})
	stop := make(chan struct{})
	wait := r.load(4, stop)
	hitsAfter := func(ip string, from int64) func() bool {
		return func() bool { return inst[ip].hits.Load() > from }
	}
	change := func(ips ...string) {
		d.SetHosts(hosts(ips...))
		d.HUP()
	}

	// Scale out.
	change("127.0.0.1", "127.0.0.2", "127.0.0.3")
	waitServed("scale out", "127.0.0.1", "127.0.0.2", "127.0.0.3")
	r.waitFor("the new instance taking traffic", 5*time.Second, hitsAfter("127.0.0.3", 0))
	// Scale in (one of three: at once).
	change("127.0.0.1", "127.0.0.3")
	waitServed("scale in", "127.0.0.1", "127.0.0.3")
	// Every instance replaced: in steps of 50%.
	change("127.0.0.4", "127.0.0.5", "127.0.0.6")
	waitServed("replaced", "127.0.0.4", "127.0.0.5", "127.0.0.6")
	// A record pointing where nothing listens: in the set, never in
	// rotation.
	change("127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.9")
	waitServed("a dead address", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.9")
	for i := 0; i < 30; i++ { // it joined out of rotation, and its probes keep it out
		for _, p := range r.srv.router.Load().Route("web").Pools {
			for _, in := range p.Instances {
				if strings.HasPrefix(in.URL.Host, "127.0.0.9:") && in.Available() {
					t.Fatal("an instance whose probe never passed is in rotation")
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Resolver down, then SERVFAIL: the last good set serves.
	d.Stop()
	time.Sleep(400 * time.Millisecond)
	d.RunServFail()
	time.Sleep(400 * time.Millisecond)
	if got := strings.Join(served(), ","); got != "127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.9" {
		t.Fatalf("after resolver errors the pool serves %s", got)
	}
	// An empty answer, then NXDOMAIN, each a blip shorter than
	// empty_after (10 resolutions, a second): nothing changes.
	d.SetHosts(hosts())
	d.Run("--txt-record=web.test,no addresses") // the name exists: an empty answer
	time.Sleep(150 * time.Millisecond)
	d.SetHosts(hosts("127.0.0.4", "127.0.0.5", "127.0.0.6"))
	d.HUP()
	waitServed("back after the empty blip", "127.0.0.4", "127.0.0.5", "127.0.0.6")
	d.SetHosts(hosts())
	d.Run() // NXDOMAIN
	time.Sleep(150 * time.Millisecond)
	d.SetHosts(hosts("127.0.0.4", "127.0.0.5", "127.0.0.6"))
	d.HUP()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	ok, bad, first := wait()
	if bad != 0 || ok == 0 {
		t.Fatalf("under DNS changes: %d ok, %d failed (first: %s)", ok, bad, first)
	}
	if got := strings.Join(served(), ","); got != "127.0.0.4,127.0.0.5,127.0.0.6" {
		t.Fatalf("at the end the pool serves %s", got)
	}
	t.Logf("%d requests through DNS changes (scale out, scale in, replace all, dead address, resolver down, SERVFAIL, empty, NXDOMAIN): 0 failed", ok)

	// A persisting empty answer empties the pool after empty_after
	// resolutions: the DNS says the service is gone.
	d.SetHosts(hosts())
	d.HUP()
	waitServed("empty for good")
	if got := metricValue(t, r.reg, "canaryd_discovery_resolutions_total", `result="nxdomain"`); got < 10 {
		t.Errorf("nxdomain resolutions counted: %v", got)
	}
	if got := metricValue(t, r.reg, "canaryd_discovery_resolutions_total", `result="servfail"`); got < 1 {
		t.Errorf("servfail resolutions counted: %v", got)
	}
	if got := metricValue(t, r.reg, "canaryd_discovery_instances", `pool="green"`); got != 0 {
		t.Errorf("canaryd_discovery_instances %v; want 0", got)
	}
}
