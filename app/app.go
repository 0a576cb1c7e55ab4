// Package app assembles a running canaryd from a validated config: it turns
// config into balancer specs, owns the router, the proxy and the listeners,
// and shuts them down gracefully. cmd/canaryd only parses flags and calls it.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"canaryd/admin"
	"canaryd/balancer"
	"canaryd/cluster"
	"canaryd/config"
	"canaryd/discovery"
	"canaryd/evidence"
	"canaryd/health"
	"canaryd/metrics"
	"canaryd/overload"
	"canaryd/panics"
	"canaryd/proxy"
	"canaryd/registry"
	"canaryd/rollout"
	"canaryd/tlsfiles"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Options wires a Server. The zero value serves cfg without reloading.
type Options struct {
	// ConfigPath is the file to watch and reload. Default "": no reloading
	// (the demo's embedded config).
	ConfigPath string
	// ConfigData is the content cfg was parsed from; its hash is the one
	// reloads compare against. Default nil.
	ConfigData []byte
	// ConfigSet is the main file and its included files as cfg was
	// assembled from (config.LoadSet). Default nil: cfg is ConfigData's
	// alone, and included files are read at the first reload.
	ConfigSet *config.Set
	// Logger; default: no logging.
	Logger *zap.Logger
	// Registry for metrics; default: a new one with Go and process metrics.
	Registry *prometheus.Registry
	// OnReload is called after every reload attempt, on the reload
	// goroutine. Default nil.
	OnReload func(ReloadResult)
	// Version is this build's, shown to the other cluster members.
	// Default "".
	Version string
}

// Server is one canaryd process: proxy listener, admin listener, the
// lifecycle, the reload goroutine, and the admin view. Every change to the
// routing table goes through its pipeline.
type Server struct {
	// Set by New and never changed after.
	opts      Options
	log       *zap.Logger
	static    config.Config // as started: what needs a restart stays so
	router    *balancer.Router
	pipe      *pipeline
	rollouts  *rollout.Manager
	streams   *proxy.Streams   // the proxy's long-lived requests, for rollbacks to end
	cluster   *cluster.Cluster // nil for a single process
	transport *proxy.Transport
	checker   *health.Checker
	registry  *registry.Registry
	discovery *discovery.Resolvers
	token     string
	trusted   []netip.Prefix
	accessLog *zap.Logger // nil when off
	// certs is the listener's TLS material; nil without TLS. redirect
	// answers plain HTTP with a redirect to https (nil: none).
	certs    *tlsfiles.Server
	redirect *http.Server
	proxy    *http.Server
	admin    *http.Server
	overload *overloadGuard

	reloadMetrics *metrics.Reloads
	// set is the config files, as last applied; the reload goroutine's.
	set           *config.Set
	healthMetrics *metrics.Health
	requests      *metrics.Requests
	shadows       *metrics.Shadows
	tlsMetrics    *metrics.TLS
	panics        *metrics.Panics

	// Atomics, read and written by any goroutine.
	accessSeq atomic.Uint64
	ready     atomic.Bool
	// broken is the first component that panicked (panicked).
	broken atomic.Pointer[string]

	// Owned by the reload goroutine (and New before it starts).
	// reloadFailing: the last config reload failed. tlsProblem is the
	// TLS files' failure reported as an error ("" when none), so that a
	// broken file is reported once, not at every poll; tlsPending is one
	// seen since tlsPendingSince and not yet reported (reloadTLS).
	reloadFailing   bool
	tlsProblem      string
	tlsPending      string
	tlsPendingSince time.Time

	// Channels between the goroutines. reloads carries reload requests
	// to the reload goroutine; reloadGone closes when it ends; watchFiles
	// carries the TLS files to watch when a reload changed them (cap 1:
	// the newest wins); stopping closes when the drain begins.
	reloads    chan reloadRequest
	reloadGone chan struct{}
	watchFiles chan []string
	stopping   chan struct{}
	background sync.WaitGroup

	// Set by Listen.
	proxyLn, adminLn, redirectLn net.Listener
}

// New builds a server from a validated config. Nothing listens yet.
func New(cfg *config.Config, o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Registry == nil {
		o.Registry = metrics.NewRegistry()
	}
	token, err := readToken(cfg.Admin.TokenFile)
	if err != nil {
		return nil, err
	}
	s := newServer(cfg, o, token)
	if err := s.setupCluster(cfg, o.Registry); err != nil {
		return nil, err
	}
	s.setupPipeline(cfg)
	s.setupRollouts(cfg, o.Registry)
	if err := s.setupRegistry(cfg); err != nil {
		return nil, err
	}
	s.setupDiscovery(cfg, o.Registry)
	hash := ""
	if o.ConfigData != nil {
		hash = hashOf(o.ConfigData)
	}
	switch {
	case o.ConfigSet != nil:
		s.set, hash = o.ConfigSet, o.ConfigSet.Hash()
	case o.ConfigPath != "":
		s.set = config.NewSet(o.ConfigPath)
	}
	if err := s.pipe.first(cfg, hash); err != nil {
		return nil, err
	}
	s.reloadMetrics.Loaded(hash, time.Now())
	if s.set != nil {
		ok := map[string]bool{o.ConfigPath: true}
		for _, f := range s.set.Files() {
			ok[f] = true
		}
		s.reloadMetrics.Files(ok)
	}
	if err := s.setupProxy(cfg); err != nil {
		return nil, err
	}
	if err := s.setupOverload(cfg, o.Registry); err != nil {
		return nil, err
	}
	if err := s.setupFrontDoor(cfg); err != nil {
		return nil, err
	}
	s.setupAdmin(cfg)
	return s, nil
}

// readToken reads admin.token_file ("" without one).
func readToken(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("admin.token_file %s is empty; put the token in it or remove the key", file)
	}
	return token, nil
}

// settingsOf is cfg without its routes: the settings a process keeps for
// its life. Keeping the routes too would keep the first config's routes
// alive after every reload (at 10,000 routes, tens of MiB).
func settingsOf(cfg *config.Config) config.Config {
	st := *cfg
	st.Routes = nil
	return st
}

// newServer holds the parts that need nothing but the config.
func newServer(cfg *config.Config, o Options, token string) *Server {
	router := balancer.NewRouter()
	s := &Server{
		opts: o, log: o.Logger, router: router, static: settingsOf(cfg),
		reloadMetrics: metrics.NewReloads(o.Registry),
		healthMetrics: metrics.NewHealth(o.Registry),
		requests:      metrics.NewRequests(o.Registry),
		reloads:       make(chan reloadRequest),
		reloadGone:    make(chan struct{}),
		panics:        metrics.NewPanics(o.Registry),
		stopping:      make(chan struct{}),
		token:         token,
		shadows:       metrics.NewShadows(o.Registry),
		tlsMetrics:    metrics.NewTLS(o.Registry),
		watchFiles:    make(chan []string, 1),
		trusted:       cfg.Trusted(),
		transport:     proxy.NewTransport(transportOptions(cfg.Upstream)),
	}
	if cfg.AccessLog.Enabled {
		// No caller: it would name logAccess, the same line every time.
		s.accessLog = s.log.Named("access").WithOptions(zap.WithCaller(false))
	}
	return s
}

// setupPipeline creates the health checker and the pipeline that owns
// every change to the table (after setupCluster: it needs to know).
func (s *Server) setupPipeline(cfg *config.Config) {
	var pipe *pipeline
	publishRoute := func(route string) {
		if r := s.router.Load().Route(route); r != nil {
			pipe.publish([]*balancer.Route{r})
		}
	}
	s.checker = health.New(s.router, healthEvents{log: s.log.Named("health"), metrics: s.healthMetrics, router: s.router, weights: publishRoute})
	// canaryd_instance_healthy is read from the live table at each scrape.
	s.healthMetrics.Source(func(yield func(route, pool, instance string, up bool)) {
		for _, r := range s.router.Load().Routes() {
			for _, p := range r.Pools {
				for _, in := range p.Instances {
					yield(r.Name, p.Name, in.Addr, in.Available())
				}
			}
		}
	})
	s.checker.SetPanicHandler(s.panicked)
	pipe = newPipeline(pipelineDeps{
		log: s.log, static: cfg, router: s.router, requests: s.requests, shadows: s.shadows,
		checker: s.checker, health: s.healthMetrics, transport: s.transport, clustered: s.cluster != nil,
		onPanic: s.panicked, background: &s.background, stopping: s.stopping,
	})
	s.pipe = pipe
}

// setupRollouts creates the rollout manager: on its own, or in a cluster
// a follower until elected.
func (s *Server) setupRollouts(cfg *config.Config, reg prometheus.Registerer) {
	// The proxy keeps the streams in flight; a rollback ends the canary's.
	s.streams = proxy.NewStreams()
	deps := rollout.Deps{
		Sink: s.pipe, Counters: s, Pools: s.checker, Streams: s.streams,
		Metrics:  metrics.NewRollouts(reg),
		Log:      s.log.Named("rollout"),
		StateDir: cfg.StateDir,
		OnPanic:  s.panicked,
	}
	if s.cluster != nil {
		// The leader judges every member's traffic and writes the state
		// to etcd; the others serve what it writes.
		deps.Clustered = true
		deps.Store = &clusterStore{c: s.cluster, last: map[string][2]int{}}
		deps.Counters = clusterCounts{s}
	}
	s.rollouts = rollout.NewManager(deps)
	s.pipe.setRollouts(s.rollouts)
}

// setupProxy creates the proxy handler and its http.Server.
func (s *Server) setupProxy(cfg *config.Config) error {
	h := proxy.New(s.router, proxy.Options{
		Logger:         s.log.Named("proxy"),
		TrustedProxies: s.trusted,
		Transport:      s.transport,
		Observer:       outcomes{s},
		CountBytes:     cfg.AccessLog.Enabled,
		GRPCErrors:     cfg.GRPC.Errors(),

		MaxRequestBodyBytes: cfg.Server.MaxRequestBodyBytes,
		BodyTimeout:         cfg.Server.RequestBodyTimeout.D(),
		MinBodyRate:         cfg.Server.MinRequestBodyRate.BytesPerSecond,
		BodyRateGrace:       cfg.Server.MinRequestBodyRate.Grace.D(),
		BufferBodyBytes:     cfg.Upstream.RequestBuffering.Max(),
		Streams:             s.streams,
	})
	// The server's own complaints (TLS handshakes, bad requests it
	// rejects) are worth a warning, not an error: clients cause them, and
	// at most serverLogLines of them a second are logged.
	errorLog, err := zap.NewStdLogAt(s.log.Named("http"), zap.WarnLevel)
	if err != nil {
		return err
	}
	errorLog.SetOutput(&limitedLog{w: errorLog.Writer()})
	s.proxy = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
		IdleTimeout:       cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes:    cfg.Server.MaxHeaderBytes,
		ErrorLog:          errorLog,
		// No ReadTimeout or WriteTimeout: either would cut long uploads,
		// WebSockets and event streams. Slow clients are bounded by
		// ReadHeaderTimeout and IdleTimeout, request_body_timeout between
		// two reads of a body (the proxy handler), client_write_timeout
		// between two writes (the listener's connections), server.limits,
		// and on HTTP/2 by server.http2's write_byte_timeout and stream
		// limit.
	}
	return nil
}

// setupAdmin creates the admin listener's server (none when off).
func (s *Server) setupAdmin(cfg *config.Config) {
	if cfg.Admin.Listen == config.AdminOff {
		return
	}
	s.admin = &http.Server{
		Handler: admin.New(admin.Options{
			Ready:   s.ready.Load,
			Broken:  s.brokenBy,
			Metrics: promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{ErrorLog: zap.NewStdLog(s.log.Named("metrics"))}),
			Reload: func(ctx context.Context) admin.ReloadResult {
				return s.Reload(ctx, "admin API").admin()
			},
			Token:        s.token,
			Routes:       s,
			Instances:    s,
			AllowedHosts: cfg.Admin.AllowedHosts,
			Pprof:        cfg.Admin.Pprof,
			Dashboard:    admin.Dashboard(),
			Cluster:      s.clusterViewFunc(),
		}),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
}

// PoolTraffic is a pool's cumulative request counts, weighted and preview
// apart (for rollouts).
func (s *Server) PoolTraffic(route, pool string) evidence.Traffic {
	return s.requests.Pool(route, pool).Traffic()
}

// Listen binds the listeners, so that a port conflict fails before anything
// is served.
func (s *Server) Listen() error {
	var err error
	if s.proxyLn, err = net.Listen("tcp", s.static.Listen); err != nil {
		return fmt.Errorf("proxy listener: %w (is another process on that port? change listen in the config)", err)
	}
	if s.redirect != nil {
		if s.redirectLn, err = net.Listen("tcp", s.static.TLS.RedirectHTTP); err != nil {
			s.proxyLn.Close()
			return fmt.Errorf("tls.redirect_http listener: %w (is another process on that port? change tls.redirect_http, or remove it)", err)
		}
	}
	if s.admin != nil {
		if s.adminLn, err = net.Listen("tcp", s.static.Admin.Listen); err != nil {
			s.proxyLn.Close()
			if s.redirectLn != nil {
				s.redirectLn.Close()
			}
			return fmt.Errorf("admin listener: %w (change admin.listen, or set it to \"off\")", err)
		}
		if ap, err := netip.ParseAddrPort(s.adminLn.Addr().String()); err == nil && !ap.Addr().IsLoopback() && s.token == "" {
			s.log.Warn("THE ADMIN LISTENER IS REACHABLE BEYOND THIS MACHINE AND HAS NO TOKEN: anyone who can reach "+s.adminLn.Addr().String()+
				" can change weights and abort releases. Set admin.token_file, or bind admin.listen to 127.0.0.1",
				zap.String("admin", s.adminLn.Addr().String()))
		}
	}
	return nil
}

// ProxyAddr is the bound proxy address (after Listen).
func (s *Server) ProxyAddr() net.Addr { return s.proxyLn.Addr() }

// AdminAddr is the bound admin address, nil when the admin is off.
func (s *Server) AdminAddr() net.Addr {
	if s.adminLn == nil {
		return nil
	}
	return s.adminLn.Addr()
}

// Serve serves until ctx ends, then drains: readiness turns false at once,
// the listeners close, in-flight requests get up to server.drain_timeout to
// finish, and whatever is left is closed. It returns nil after a clean
// drain and an error only when a listener fails.
func (s *Server) Serve(ctx context.Context) error {
	if s.proxyLn == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	firstTickets := s.firstTicketKeys()
	errs := make(chan error, 3)
	go serveOn(s.proxy, s.frontListener(s.proxyLn), "proxy", errs)
	if s.admin != nil {
		go serveOn(s.admin, s.adminLn, "admin", errs)
	}
	if s.redirect != nil {
		// The redirect listener has the same connection limits, counted
		// apart: a flood of plain HTTP must not take the descriptors either.
		go serveOn(s.redirect, overload.NewListener(s.redirectLn, s.overload.listenerOptions(s.trustedPeer)), "redirect", errs)
	}
	rctx, stopReloads := context.WithCancel(context.Background())
	s.startBackground(rctx, firstTickets)
	s.ready.Store(true)
	s.logServing()

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errs:
	}
	s.ready.Store(false)
	stopReloads()
	s.drainAndStop()
	return serveErr
}

// startBackground starts the goroutines that run beside the listeners,
// each under the panic policy, until rctx ends.
func (s *Server) startBackground(rctx context.Context, firstTickets [][32]byte) {
	// Availability changes are published by one goroutine from here on,
	// off the goroutines (probes, requests) that decide them.
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		panics.Guard(s.panicked, "availability publisher", func() { s.router.Run(rctx, s.pipe.publish) })
	}()
	s.checker.Start()
	s.startTLSBackground(rctx, firstTickets)
	s.rollouts.Start()
	s.registry.Start()
	s.discovery.Start(s.pipe.config())
	if s.cluster != nil {
		s.cluster.SetInfo(s.clusterInfo(s.pipe.config()))
		s.cluster.Start()
	}
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		panics.Guard(s.panicked, "metrics windows", func() { s.requests.Run(rctx) })
	}()
	if s.opts.ConfigPath != "" {
		s.background.Add(2)
		go func() {
			defer s.background.Done()
			defer close(s.reloadGone)
			panics.Guard(s.panicked, "reload loop", func() { s.reloadLoop(rctx) })
		}()
		go func() {
			defer s.background.Done()
			panics.Guard(s.panicked, "config watcher", func() { s.watchLoop(rctx) })
		}()
	}
}

func (s *Server) logServing() {
	fields := []zap.Field{zap.String("listen", s.proxyLn.Addr().String()), zap.Int("routes", len(s.pipe.config().Routes)),
		zap.Bool("upstream_fast_path", *s.static.Upstream.FastPath), zap.Bool("tls", s.certs != nil),
		zap.Bool("h2c", s.static.Server.H2C), zap.Bool("proxy_protocol", s.static.Server.ProxyProtocol)}
	if s.redirectLn != nil {
		fields = append(fields, zap.String("redirect_http", s.redirectLn.Addr().String()))
	}
	if s.adminLn != nil {
		fields = append(fields, zap.String("admin", s.adminLn.Addr().String()))
	}
	s.log.Info("canaryd serving", fields...)
	s.overload.logLimits()
}

// drainAndStop is the shutdown after readiness turned false: decisions
// stop and are saved, a cluster leader resigns, the listener closes and
// the requests in flight get drain_timeout, then everything else stops.
func (s *Server) drainAndStop() {
	// Rollouts stop deciding before the drain begins, and save the state
	// they have now: the drain sees no new traffic, and a controller
	// judging it would step or pause on nothing. (A reload still running
	// is ignored by them from here on.)
	s.bounded("rollouts stop", s.rollouts.Stop)
	if s.cluster != nil {
		// After the last state is saved, before the drain: another
		// member leads at once, not a session_ttl later.
		s.bounded("cluster resignation", s.cluster.Resign)
	}
	close(s.stopping)
	dctx, cancel := context.WithTimeout(context.Background(), s.static.Server.DrainTimeout.D())
	defer cancel()
	// Shutdown closes the listener first and then waits for the requests in
	// flight; "draining" is logged between the two, so that whoever reads
	// it can count on new connections being refused.
	listenerClosed := make(chan struct{})
	s.proxy.RegisterOnShutdown(func() { close(listenerClosed) })
	drained := make(chan error, 1)
	go func() { drained <- s.proxy.Shutdown(dctx) }()
	<-listenerClosed
	s.log.Info("draining", zap.Duration("drain_timeout", s.static.Server.DrainTimeout.D()))
	if err := <-drained; err != nil {
		s.log.Warn("drain timeout reached; closing the connections still open", zap.Error(err))
		s.proxy.Close()
	}
	if s.admin != nil {
		s.admin.Close()
	}
	if s.redirect != nil {
		s.redirect.Close()
	}
	// No instance set changes from here on: a change would start a drain
	// on the background group being waited for.
	s.registry.Close()
	s.discovery.Close()
	s.background.Wait()
	if s.cluster != nil {
		s.bounded("cluster close", s.cluster.Close)
	}
	s.bounded("rollouts close", s.rollouts.Close)
	s.pipe.closeMirrors()
	s.checker.Close()
	s.pipe.closeIdle()
	s.log.Info("stopped")
}

func serveOn(srv *http.Server, ln net.Listener, name string, errs chan<- error) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs <- fmt.Errorf("%s listener: %w", name, err)
	}
}
