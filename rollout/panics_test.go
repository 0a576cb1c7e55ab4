package rollout

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/evidence"
	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

// boomCounters panics once armed: the controller's tripwire reads them
// every second.
type boomCounters struct {
	*sim
	armed atomic.Bool
}

func (b *boomCounters) PoolTraffic(route, pool string) evidence.Traffic {
	if b.armed.Load() {
		panic("injected")
	}
	return b.sim.PoolTraffic(route, pool)
}

type boomTransport struct{}

func (boomTransport) RoundTrip(*http.Request) (*http.Response, error) { panic("injected") }

// A panic in a controller and in the webhook notifier reaches the panic
// handler; the other rollouts' goroutines are not affected.
func TestPanicsOfControllerAndNotifierReachTheHandler(t *testing.T) {
	var mu sync.Mutex
	got := map[string]bool{}
	counters := &boomCounters{sim: newSim()}
	m := NewManager(Deps{Counters: counters, Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir(),
		OnPanic: func(component string, _ any, _ []byte) { mu.Lock(); got[component] = true; mu.Unlock() }})
	m.notifier.client = &http.Client{Transport: boomTransport{}}
	defer m.Close()
	cfg, err := config.Parse("p.yaml", []byte(`routes:
  - name: web
    rollout: { stable: blue, canary: green, steps: [10, 100], interval: 1h, webhook: { url: "http://127.0.0.1:1/hook" } }
    pools:
      - { name: blue, weight: 100, instances: ["127.0.0.1:1"] }
      - { name: green, weight: 0, instances: ["127.0.0.1:2"] }
`))
	if err != nil {
		t.Fatal(err)
	}
	m.SetWebhooks(cfg.Routes)
	m.Sync(cfg.Routes) // the release's first event goes to the webhook
	m.Start()
	counters.armed.Store(true)
	has := func(c string) bool { mu.Lock(); defer mu.Unlock(); return got[c] }
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end) && !(has("rollout controller") && has("webhook notifier")); {
		time.Sleep(20 * time.Millisecond)
	}
	if !has("rollout controller") || !has("webhook notifier") {
		t.Fatalf("panics handled: %v", got)
	}
}
