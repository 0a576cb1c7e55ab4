package app

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/metrics"

	dto "github.com/prometheus/client_model/go"
)

// A panic in a background loop (here the reload goroutine, through its
// OnReload callback) is recovered, logged and counted, and turns the
// process unready and unhealthy so that it is replaced; a reload asked of
// the dead loop fails at once instead of hanging; the data plane goes on.
func TestPanicInReloadLoopTurnsProcessBroken(t *testing.T) {
	blue := newNamed(t, "blue", 0)
	path := oneRouteConfig(t, "", "", blue.hostport())
	data, _ := os.ReadFile(path)
	cfg, err := config.Parse(path, data)
	if err != nil {
		t.Fatal(err)
	}
	reg := metrics.NewRegistry()
	var armed atomic.Bool // a file event at start may reload before the test is ready
	srv, err := New(cfg, Options{ConfigPath: path, ConfigData: data, Registry: reg,
		OnReload: func(ReloadResult) {
			if armed.Load() {
				panic("injected")
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	serveFor(t, srv)
	admin := "http://" + srv.AdminAddr().String()
	status := func(p string) (int, string) {
		resp, err := http.Get(admin + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Serve turns ready a moment after it starts.
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if code, _ := status("/readyz"); code == 200 {
			break
		} else if time.Now().After(end) {
			t.Fatalf("readyz before the panic: %d", code)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	armed.Store(true)
	srv.Reload(ctx, "test") // its OnReload panics
	start := time.Now()
	res := srv.Reload(ctx, "test again")
	if !errors.Is(res.Err, errReloadLoopGone) || time.Since(start) > time.Second {
		t.Fatalf("a reload of the dead loop: %v after %v", res.Err, time.Since(start))
	}
	if code, _ := status("/readyz"); code != 503 {
		t.Errorf("readyz after the panic: %d", code)
	}
	if code, body := status("/healthz"); code != 503 || !strings.Contains(body, "reload loop") {
		t.Errorf("healthz after the panic: %d %q", code, body)
	}
	if n := counterValue(t, reg, "canaryd_internal_panics_total", "reload loop"); n != 1 {
		t.Errorf("canaryd_internal_panics_total{component=\"reload loop\"} = %v", n)
	}
	resp, err := http.Get("http://" + srv.ProxyAddr().String() + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the data plane after the panic: %v %v", resp, err)
	}
	resp.Body.Close()
}

func counterValue(t *testing.T, reg interface {
	Gather() ([]*dto.MetricFamily, error)
}, name, component string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "component" && l.GetValue() == component {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
