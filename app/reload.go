package app

import (
	"canaryd/panics"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"canaryd/admin"
	"canaryd/balancer"
	"canaryd/config"
	"canaryd/metrics"

	"go.uber.org/zap"
)

// ReloadResult is one reload attempt's outcome.
type ReloadResult struct {
	Result string // metrics.ReloadApplied, ReloadUnchanged or ReloadFailed
	Source string // what triggered it: file event, poll, SIGHUP, admin API
	Hash   string // of the file read; "" if it could not be read
	Err    error  // why it failed
	At     time.Time
}

func (r ReloadResult) admin() admin.ReloadResult {
	a := admin.ReloadResult{Result: r.Result, Hash: r.Hash}
	if r.Err != nil {
		a.Error = r.Err.Error()
	}
	return a
}

type reloadRequest struct {
	source string
	reply  chan ReloadResult // nil: nobody waits
}

// Reload asks the reload goroutine to read the config file now and waits
// for the outcome. Every trigger goes through that one goroutine, so two
// reloads never race.
func (s *Server) Reload(ctx context.Context, source string) ReloadResult {
	if s.opts.ConfigPath == "" {
		return ReloadResult{Result: metrics.ReloadFailed, Source: source, Err: errors.New("this canaryd has no config file to reload (embedded config)"), At: time.Now()}
	}
	req := reloadRequest{source: source, reply: make(chan ReloadResult, 1)}
	failed := func(err error) ReloadResult {
		return ReloadResult{Result: metrics.ReloadFailed, Source: source, Err: err, At: time.Now()}
	}
	select {
	case s.reloads <- req:
	case <-s.reloadGone:
		return failed(errReloadLoopGone)
	case <-ctx.Done():
		return failed(ctx.Err())
	}
	select {
	case res := <-req.reply:
		return res
	case <-s.reloadGone:
		return failed(errReloadLoopGone)
	case <-ctx.Done():
		return failed(ctx.Err())
	}
}

// reloadLoop serves reload requests until ctx ends. The file watcher and
// the poll feed it without waiting; SIGHUP and the admin API wait.
func (s *Server) reloadLoop(ctx context.Context) {
	poll := time.NewTicker(s.static.Reload.PollInterval.D())
	defer poll.Stop()
	for {
		var req reloadRequest
		select {
		case <-ctx.Done():
			return
		case req = <-s.reloads:
		case <-poll.C:
			req = reloadRequest{source: "poll"}
		}
		res := s.reloadOnce(req.source)
		// The certificate, key and CA files are re-read on every trigger:
		// they change without the config file (cert-manager, certbot).
		s.applyMu.Lock()
		s.reloadTLS(req.source)
		files := s.tlsFiles()
		s.applyMu.Unlock()
		select {
		case <-s.watchFiles: // drop a set not yet taken: this one is newer
		default:
		}
		s.watchFiles <- files
		if req.reply != nil {
			req.reply <- res
		}
		if s.opts.OnReload != nil {
			s.opts.OnReload(res)
		}
	}
}

// watchLoop turns file events into reload requests: events of the config
// file and of the TLS files it names. When a reload changes that set of
// files, the watch restarts on the new one.
func (s *Server) watchLoop(ctx context.Context) {
	s.applyMu.Lock()
	files := s.tlsFiles()
	s.applyMu.Unlock()
	for {
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		paths := append([]string{s.opts.ConfigPath}, files...)
		go func() {
			err := errWatcherPanicked
			defer func() { done <- err }()
			defer panics.Recover(s.panicked, "config file watch")
			err = config.WatchFiles(wctx, paths, s.static.Reload.Debounce.D(), func(reason string) {
				select {
				case s.reloads <- reloadRequest{source: "file watch: " + reason}:
				case <-wctx.Done():
				}
			})
		}()
	wait:
		for {
			select {
			case <-ctx.Done():
				cancel()
				<-done
				return
			case err := <-done:
				cancel()
				if err != nil {
					s.log.Error("config file watch failed; edits are picked up by the poll only",
						zap.Error(err), zap.Strings("files", paths), zap.Duration("poll_interval", s.static.Reload.PollInterval.D()))
				}
				// Wait for the file set to change (a reload) before trying again.
				select {
				case <-ctx.Done():
					return
				case files = <-s.watchFiles:
				}
				break wait
			case next := <-s.watchFiles:
				if !slices.Equal(next, files) {
					files = next
					cancel()
					<-done
					break wait
				}
			}
		}
	}
}

// reloadOnce reads, validates and applies the file, whole or not at all.
func (s *Server) reloadOnce(source string) ReloadResult {
	res := ReloadResult{Source: source, At: time.Now()}
	fail := func(err error) ReloadResult {
		res.Result, res.Err = metrics.ReloadFailed, err
		s.reloadMetrics.Record(res.Result, res.Hash, res.At)
		s.reloadFailing = true
		s.log.Error("config reload failed; the running config keeps serving",
			zap.String("source", source), zap.String("config", s.opts.ConfigPath), zap.String("hash", res.Hash), zap.Error(err))
		return res
	}
	// After a failure, the first good read says so: whoever saw the error
	// in the log sees it is over (a file deleted and put back, say).
	recovered := func() {
		if s.reloadFailing {
			s.reloadFailing = false
			s.log.Info("config file readable and valid again", zap.String("source", source),
				zap.String("config", s.opts.ConfigPath), zap.String("hash", res.Hash), zap.String("result", res.Result))
		}
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	data, err := os.ReadFile(s.opts.ConfigPath)
	if err != nil {
		return fail(fmt.Errorf("read %s: %w", s.opts.ConfigPath, err))
	}
	res.Hash = hashOf(data)
	cfg, err := config.Parse(s.opts.ConfigPath, data)
	// Unchanged: the same file, and the same files it names (a rotated
	// force.secret_file is picked up by SIGHUP or the admin reload).
	if res.Hash == s.appliedHash && err == nil && sameSecrets(s.cfg, cfg) {
		res.Result = metrics.ReloadUnchanged
		s.reloadMetrics.Record(res.Result, res.Hash, res.At)
		if ce := s.log.Check(zap.DebugLevel, "config unchanged"); ce != nil {
			ce.Write(zap.String("source", source), zap.String("hash", res.Hash))
		}
		recovered()
		return res
	}
	if err != nil {
		return fail(err)
	}
	if diffs := config.RestartNeeded(s.cfg, cfg); len(diffs) > 0 {
		return fail(fmt.Errorf("this file changes settings that need a restart: %s; restart canaryd to apply it (nothing of it was applied, the running config keeps serving)", strings.Join(diffs, "; ")))
	}
	s.warnManagedWeights(cfg)
	s.reconcileManual(cfg)
	s.overrides = s.rollouts.Sync(cfg.Routes)
	s.rollouts.SetWebhooks(cfg.Routes)
	specs, err := s.routeSpecs(cfg)
	if err != nil {
		return fail(err)
	}
	removed, err := s.router.Apply(specs)
	if err != nil {
		return fail(err)
	}
	s.retireMirrors(specs)
	s.retireConns(specs)
	s.publishWeights()
	s.syncHealth(cfg)
	s.cfg, s.appliedHash = cfg, res.Hash
	if s.cluster != nil {
		// The leader compares members' route settings (config drift).
		info := s.clusterInfo(cfg)
		s.background.Add(1)
		go func() {
			defer s.background.Done()
			panics.Guard(s.panicked, "cluster info", func() { s.cluster.SetInfo(info) })
		}()
	}
	res.Result = metrics.ReloadApplied
	s.reloadMetrics.Record(res.Result, res.Hash, res.At)
	s.log.Info("config applied", zap.String("source", source), zap.String("hash", res.Hash),
		zap.Strings("weights_served", s.servedWeights()), zap.Int("instances_removed", len(removed)))
	recovered()
	s.drain(removed)
	return res
}

// warnManagedWeights says so when a file edits the weights of pools that a
// running rollout owns: those edits are not applied (docs/rollouts.md).
func (s *Server) warnManagedWeights(next *config.Config) {
	running := map[string]config.Route{}
	for _, r := range s.cfg.Routes {
		running[r.Name] = r
	}
	for _, r := range next.Routes {
		old, ok := running[r.Name]
		if !ok || r.Rollout == nil || old.Rollout == nil {
			continue
		}
		was := map[string]config.Percent{}
		for _, p := range old.Pools {
			was[p.Name] = p.Weight
		}
		for _, p := range r.Pools {
			if w, ok := was[p.Name]; ok && w != p.Weight && (p.Name == r.Rollout.Stable || p.Name == r.Rollout.Canary) {
				s.log.Warn("weight edit not applied: the route's rollout sets its stable and canary weights in every phase (after an abort or a promotion too); remove the rollout block to set them by hand",
					zap.String("route", r.Name), zap.String("pool", p.Name), zap.String("file_weight", p.Weight.String()))
			}
		}
	}
}

// drain waits for removed instances to finish their in-flight requests (no
// new request reaches them: they are in no table any more), then closes
// their connections. One goroutine per reload, not per instance.
func (s *Server) drain(removed []*balancer.Instance) {
	if len(removed) == 0 {
		return
	}
	transports := s.transports()
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		defer panics.Recover(s.panicked, "instance drain")
		deadline := time.Now().Add(s.static.Server.DrainTimeout.D())
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for _, in := range removed {
			for in.InFlight() > 0 && time.Now().Before(deadline) {
				select {
				case <-tick.C:
				case <-s.stopping:
					return
				}
			}
			left := in.InFlight()
			closed := 0
			if !s.inUse(in.URL.Host) {
				for _, t := range transports {
					closed += t.CloseConnsTo(in.URL.Host)
				}
			}
			lvl := zap.InfoLevel
			if left > 0 {
				lvl = zap.WarnLevel
			}
			s.log.Log(lvl, "removed instance drained", zap.String("route", in.Route), zap.String("pool", in.Pool),
				zap.String("instance", in.Addr), zap.Int64("still_in_flight", left), zap.Int("connections_closed", closed))
		}
	}()
}

// inUse reports whether host:port is still an instance somewhere in the
// live table (the same address may serve another pool or route).
func (s *Server) inUse(hostport string) bool {
	for _, r := range s.router.Load().Routes() {
		for _, p := range r.Pools {
			for _, in := range p.Instances {
				if in.URL.Host == hostport {
					return true
				}
			}
		}
	}
	return false
}

func hashOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// servedWeights is each route's weights as the live table serves them
// (a rollout's or set by hand, not necessarily the file's): "web:
// blue=95 green=5".
func (s *Server) servedWeights() []string {
	var out []string
	for _, r := range s.router.Load().Routes() {
		parts := make([]string, 0, len(r.Pools))
		for _, p := range r.Pools {
			parts = append(parts, p.Name+"="+config.Percent(p.Weight).String())
		}
		out = append(out, r.Name+": "+strings.Join(parts, " "))
	}
	return out
}

// sameSecrets reports whether two configs carry the same force secrets,
// route by route.
func sameSecrets(a, b *config.Config) bool {
	if len(a.Routes) != len(b.Routes) {
		return false
	}
	for i := range a.Routes {
		if a.Routes[i].Force.Secret() != b.Routes[i].Force.Secret() {
			return false
		}
	}
	return true
}
