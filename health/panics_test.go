package health_test

import (
	"net/url"
	"sync"
	"testing"
	"time"

	"canaryd/balancer"
	"canaryd/health"
)

// panicky panics on the transitions it is told to.
type panicky struct{ up, down bool }

func (p panicky) Transition(t health.Transition) {
	if t.Up && p.up || !t.Up && p.down {
		panic("injected")
	}
}
func (panicky) EjectionRefused(health.Target, string) {}

type recorded struct {
	mu   sync.Mutex
	list []string
}

func (r *recorded) handle(component string, _ any, stack []byte) {
	r.mu.Lock()
	r.list = append(r.list, component)
	r.mu.Unlock()
}

func (r *recorded) has(c string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.list {
		if x == c {
			return true
		}
	}
	return false
}

// A panic in a probe and in the ejection sweeper reaches the panic
// handler (and kills neither the process nor the other goroutines).
func TestPanicsOfProbesAndSweeperReachTheHandler(t *testing.T) {
	for _, tc := range []struct {
		name, component string
		cfg             health.Config
		ev              panicky
		url             func(t *testing.T) string
		provoke         func(in *health.Instance)
	}{
		{"probe", "health probe", activeCfg(), panicky{down: true},
			func(t *testing.T) string { s, _ := probed(t, func(int64) bool { return true }); return s.URL },
			func(*health.Instance) {}},
		{"sweeper", "health sweeper", passive(), panicky{up: true},
			func(*testing.T) string { return "http://127.0.0.1:1" },
			func(in *health.Instance) {
				for i := 0; i < 5; i++ {
					in.Observe(502, true, false)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			router := balancer.NewRouter()
			u, _ := url.Parse(tc.url(t))
			if _, err := router.Apply([]balancer.RouteSpec{{Name: "r", PathPrefix: "/", Pools: []balancer.PoolSpec{
				{Name: "p", Weight: balancer.Slots, Instances: []*url.URL{u}},
				{Name: "q", Weight: 0, Instances: []*url.URL{u}},
			}}}); err != nil {
				t.Fatal(err)
			}
			c := health.New(router, tc.ev)
			var rec recorded
			c.SetPanicHandler(rec.handle)
			defer c.Close()
			recs := c.Sync([]health.Target{{Route: "r", Pool: "p", Addr: u.String(), URL: u, Config: tc.cfg}})
			c.Start()
			tc.provoke(recs[0])
			eventually(t, 5*time.Second, tc.component+" panic handled", func() bool { return rec.has(tc.component) })
		})
	}
}
