package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"canaryd/app"
	"canaryd/config"
	"canaryd/panics"

	"go.uber.org/zap"
)

// Options are what `canaryd demo` runs with.
type Options struct {
	// Config is the config's text (the shipped config.yaml). Required.
	Config []byte
	// Listen and Admin move the proxy and the admin listener. Default "":
	// the config's.
	Listen, Admin string
	// CanaryErrors is the fraction of the last pool's answers that are
	// 500s. Default 0.
	CanaryErrors float64
	// Rate is the built-in load in requests per second. 0: none.
	Rate int
	// Interval is the rollout's analysis interval. Default: the config's.
	Interval time.Duration
	// BackendPort moves the demo backends: the first on this port, the
	// others at their distances from it. Default 0: the config's.
	BackendPort int
	// Out gets the banner and the load's split lines. Required.
	Out io.Writer
	// Log is the logger. Default: none.
	Log *zap.Logger
}

// UsageError is an error in the options themselves (exit status 2).
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Run runs the demo until ctx ends: the config's backends on loopback,
// canaryd on the config (its state in a temporary directory), and the
// load. Every port is bound before the banner, so a port another process
// holds fails the demo at once, with advice that works for the demo.
func Run(ctx context.Context, o Options) error {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	cfg, err := config.Parse("embedded config.yaml", o.Config)
	if err != nil {
		return err
	}
	stateDir, err := os.MkdirTemp("", "canaryd-demo-state")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stateDir)
	if err := o.apply(cfg, stateDir); err != nil {
		return err
	}
	backends := Backends(cfg, o.CanaryErrors)
	lns, err := Listen(backends)
	if err != nil {
		return fmt.Errorf("canaryd demo cannot start: %w\n  another process holds a demo port (an earlier demo still running?): stop it, or move the demo's backends with --backend-port 19001", err)
	}
	log, release := hold(o.Log)
	defer release()
	srv, err := app.New(cfg, app.Options{Logger: log})
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		for _, l := range lns {
			l.Close()
		}
		return fmt.Errorf("canaryd demo cannot start: %w\n  in the demo, move the proxy and the admin listener with --listen 127.0.0.1:18080 --admin 127.0.0.1:19901", err)
	}
	bctx, stopBackends := context.WithCancel(context.Background())
	defer stopBackends()
	berr := make(chan error, 1)
	go func() {
		defer panics.Recover(nil, "demo backends")
		berr <- Serve(bctx, log.Named("demo"), backends, lns)
	}()
	proxyURL := "http://" + srv.ProxyAddr().String()
	banner := fmt.Sprintf("canaryd demo: proxy %s", proxyURL)
	if a := srv.AdminAddr(); a != nil {
		banner += fmt.Sprintf("\n  dashboard http://%s/   (canaryd status --watch --admin %s)", a, a)
	}
	banner += fmt.Sprintf("\n  try: curl -s %s/   |   curl -s -H 'X-Canary-Pool: green' %s/\n  Ctrl-C stops.\n", proxyURL, proxyURL)
	io.WriteString(o.Out, banner) // one write: no log line amid it
	release()                     // what canaryd logged while it started, after the banner
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if o.Rate > 0 {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		go func() {
			defer panics.Recover(nil, "demo load")
			Load(ctx, client, proxyURL+"/", o.Rate, 2*time.Second, func(s Split) {
				fmt.Fprintln(o.Out, "  split", strings.TrimPrefix(s.String(), "last "))
			})
		}()
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	select {
	case err := <-done:
		return err
	case err := <-berr:
		stop()
		<-done
		if err != nil {
			return fmt.Errorf("demo backends failed: %w", err)
		}
		return nil
	}
}

// apply puts the options into the config. The demo walks its rollout in
// well under a minute, and keeps its state out of the working directory.
func (o Options) apply(cfg *config.Config, stateDir string) error {
	if o.Listen != "" {
		cfg.Listen = o.Listen
	}
	if o.Admin != "" {
		cfg.Admin.Listen = o.Admin
	}
	if o.Interval > 0 {
		for i := range cfg.Routes {
			if ro := cfg.Routes[i].Rollout; ro != nil {
				ro.Interval = config.Duration(o.Interval)
			}
		}
	}
	cfg.StateDir = stateDir
	if o.BackendPort != 0 {
		if err := shiftPorts(cfg, o.BackendPort); err != nil {
			return UsageError{err}
		}
	}
	return nil
}

// Bound is a demo backend and the address it serves on.
type Bound struct {
	Addr    string
	Backend Backend
}

// Backends are the config's instances as demo backends; the last pool of
// a route with several answers canaryErrors of its requests with 500s.
func Backends(cfg *config.Config, canaryErrors float64) []Bound {
	var out []Bound
	for _, r := range cfg.Routes {
		for i, p := range r.Pools {
			for _, in := range p.Instances {
				b := Backend{Pool: p.Name, Instance: in, Latency: 2 * time.Millisecond}
				if i == len(r.Pools)-1 && len(r.Pools) > 1 {
					b.ErrorRate = canaryErrors
				}
				out = append(out, Bound{in, b})
			}
		}
	}
	return out
}

// Listen binds every backend's port, so that a port held by another
// process fails before anything is announced.
func Listen(bs []Bound) ([]net.Listener, error) {
	var lns []net.Listener
	for _, d := range bs {
		ln, err := net.Listen("tcp", d.Addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("demo backend %s (pool %s): %w", d.Addr, d.Backend.Pool, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// Serve serves each backend on its listener until ctx ends.
func Serve(ctx context.Context, log *zap.Logger, bs []Bound, lns []net.Listener) error {
	var servers []*http.Server
	errs := make(chan error, len(bs))
	for i, d := range bs {
		srv := &http.Server{Handler: d.Backend, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		ln := lns[i]
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- err
			}
		}()
		log.Info("demo backend up", zap.String("pool", d.Backend.Pool), zap.String("listen", d.Addr))
	}
	go func() {
		<-ctx.Done()
		for _, s := range servers {
			s.Close()
		}
	}()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}

// shiftPorts moves the demo's instances so that the lowest port is base,
// the others keeping their distance from it.
func shiftPorts(cfg *config.Config, base int) error {
	lowest := 0
	each := func(f func(p *config.Pool, i int, host string, port int)) {
		for r := range cfg.Routes {
			for p := range cfg.Routes[r].Pools {
				pool := &cfg.Routes[r].Pools[p]
				for i, in := range pool.Instances {
					host, ps, _ := net.SplitHostPort(in)
					port, _ := strconv.Atoi(ps)
					f(pool, i, host, port)
				}
			}
		}
	}
	each(func(_ *config.Pool, _ int, _ string, port int) {
		if lowest == 0 || port < lowest {
			lowest = port
		}
	})
	var bad error
	moved := map[*config.Pool][]string{}
	each(func(p *config.Pool, i int, host string, port int) {
		n := port - lowest + base
		if n < 1 || n > 65535 {
			bad = fmt.Errorf("--backend-port %d puts a backend on port %d; choose a port from 1 to %d", base, n, 65535-(port-lowest))
		}
		if moved[p] == nil {
			moved[p] = append([]string(nil), p.Instances...)
		}
		moved[p][i] = net.JoinHostPort(host, strconv.Itoa(n))
	})
	if bad != nil {
		return bad
	}
	for p, instances := range moved {
		if err := p.SetInstances(instances); err != nil {
			return err
		}
	}
	return nil
}
