package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"canaryd/admin"
	"canaryd/config"
	"canaryd/filewatch"
	"canaryd/metrics"
	"canaryd/panics"

	"go.uber.org/zap"
)

// ReloadResult is one reload attempt's outcome.
type ReloadResult struct {
	Result metrics.ReloadOutcome
	Source string // what triggered it: file event, poll, SIGHUP, admin API
	Hash   string // of the file read; "" if it could not be read
	Err    error  // why it failed
	At     time.Time
}

func (r ReloadResult) admin() admin.ReloadResult {
	a := admin.ReloadResult{Result: string(r.Result), Hash: r.Hash}
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
	// recheck fires when TLS files that did not make a sound pair are due
	// another look (tlsGrace); nil while none is pending.
	var recheck <-chan time.Time
	for {
		var req reloadRequest
		select {
		case <-ctx.Done():
			return
		case req = <-s.reloads:
		case <-poll.C:
			req = reloadRequest{source: "poll"}
		case <-recheck:
			req = reloadRequest{source: "TLS recheck"}
		}
		res := s.reloadOnce(req.source)
		// The certificate, key and CA files are re-read on every trigger:
		// they change without the config file (cert-manager, certbot).
		recheck = nil
		if s.reloadTLS(req.source) {
			recheck = time.After(tlsGrace)
		}
		files := s.watchPaths()
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
	files := s.watchPaths()
	for {
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		paths := append([]string{s.opts.ConfigPath}, files...)
		go func() {
			err := errWatcherPanicked
			defer func() { done <- err }()
			defer panics.Recover(s.panicked, "config file watch")
			err = filewatch.Files(wctx, paths, s.static.Reload.Debounce.D(), func(reason string) {
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

// watchPaths are the files to watch besides the config file: its include
// globs (as of the applied config) and the TLS files.
func (s *Server) watchPaths() []string {
	return append(config.IncludePatterns(s.opts.ConfigPath, s.pipe.config()), s.tlsFiles()...)
}

// reloadOnce reads, validates and applies the config: the main file
// whole or not at all, each included file whole or not at all.
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
				zap.String("config", s.opts.ConfigPath), zap.String("hash", res.Hash), zap.String("result", string(res.Result)))
		}
	}
	// SIGHUP and the admin API re-read every file, and the secret files
	// they name; a file event or the poll parses the files that changed.
	all := source == "SIGHUP" || source == "admin API"
	u, err := s.set.Reload(all)
	if err != nil {
		s.reloadMetrics.File(s.opts.ConfigPath, false)
		return fail(err)
	}
	res.Hash = u.Hash
	cfg := u.Config
	var removed int
	if u.Full {
		removed, err = s.pipe.reload(cfg, res.Hash)
	} else {
		removed, err = s.pipe.reloadRoutes(cfg, res.Hash, u.Changed)
	}
	if err == nil || errors.Is(err, errUnchanged) {
		s.set.Commit(u)
		s.recordFiles(u)
	}
	if err == nil && u.Err != nil {
		// The other files applied; these keep their last good version.
		s.logApplied(source, res.Hash, removed, u.Changed, time.Since(res.At))
		s.afterApply(cfg)
		return fail(fmt.Errorf("included files not applied (each keeps its last good version; the rest was applied): %w", u.Err))
	}
	if errors.Is(err, errUnchanged) && u.Err != nil {
		return fail(fmt.Errorf("included files not applied (each keeps its last good version): %w", u.Err))
	}
	if errors.Is(err, errUnchanged) {
		res.Result = metrics.ReloadUnchanged
		s.reloadMetrics.Record(res.Result, res.Hash, res.At)
		if ce := s.log.Check(zap.DebugLevel, "config unchanged"); ce != nil {
			ce.Write(zap.String("source", source), zap.String("hash", res.Hash))
		}
		recovered()
		return res
	}
	if err != nil {
		s.reloadMetrics.File(s.opts.ConfigPath, false)
		return fail(err)
	}
	s.afterApply(cfg)
	res.Result = metrics.ReloadApplied
	s.reloadMetrics.Record(res.Result, res.Hash, res.At)
	s.logApplied(source, res.Hash, removed, u.Changed, time.Since(res.At))
	recovered()
	return res
}

// afterApply tells the parts that follow the config what was applied.
func (s *Server) afterApply(cfg *config.Config) {
	s.discovery.Sync(cfg) // discovered pools added, changed or gone
	if s.cluster != nil {
		// The leader compares members' route settings (config drift).
		info := s.clusterInfo(cfg)
		s.background.Add(1)
		go func() {
			defer s.background.Done()
			panics.Guard(s.panicked, "cluster info", func() { s.cluster.SetInfo(info) })
		}()
	}
}

// logApplied says what a reload applied, and how long it took from the
// read to the table served (took_ms).
func (s *Server) logApplied(source, hash string, removed int, changed []string, took time.Duration) {
	fields := []zap.Field{zap.String("source", source), zap.String("hash", hash), zap.Int("instances_removed", removed),
		zap.Float64("took_ms", float64(took.Microseconds())/1000)}
	if t := s.router.Load(); len(t.Routes()) <= 100 {
		fields = append(fields, zap.Strings("weights_served", servedWeights(t)))
	} else if len(changed) > 0 && len(changed) <= 100 {
		fields = append(fields, zap.Strings("routes_changed", changed))
	}
	s.log.Info("config applied", fields...)
}

// recordFiles exports each config file's outcome.
func (s *Server) recordFiles(u *config.Update) {
	ok := map[string]bool{s.opts.ConfigPath: true}
	for _, f := range u.Files {
		ok[f.Path] = f.Err == nil
	}
	s.reloadMetrics.Files(ok)
}

func hashOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}
