// Command canaryd is a self-hosted canary router. This file parses flags,
// builds the logger and wires packages together; the logic lives in them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"canaryd"
	"canaryd/app"
	"canaryd/config"
	"canaryd/demo"
	"canaryd/memlimit"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

type logFlags struct{ format, level string }

func (l *logFlags) register(fs *flag.FlagSet, format string) {
	fs.StringVar(&l.format, "log-format", format, "log format: json or console")
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
}

func (l *logFlags) build() (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(l.level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", l.level)
	}
	var zc zap.Config
	switch l.format {
	case "json":
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.TimeKey = "ts"
		zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
		// Durations with their unit ("30s", "250ms"): a bare 30 says
		// nothing. (The access log's duration is a number of seconds.)
		zc.EncoderConfig.EncodeDuration = zapcore.StringDurationEncoder
	case "console":
		zc = zap.NewDevelopmentConfig()
		zc.Development = false
	default:
		return nil, fmt.Errorf("--log-format %q: use json or console", l.format)
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.DisableStacktrace = true // operators need the message and fields, not our call stack
	return zc.Build()
}

// logFlagsOn adds the log flags to fs; logger builds the logger once they
// are parsed. A non-zero code means: stop and exit with it (the message is
// written).
func logFlagsOn(fs *flag.FlagSet, format string) *logFlags {
	lf := &logFlags{}
	lf.register(fs, format)
	return lf
}

func (l *logFlags) logger(name string, stderr io.Writer) (*zap.Logger, int) {
	log, err := l.build()
	if err != nil {
		fmt.Fprintf(stderr, "canaryd %s: %v\n", name, err)
		return nil, 2
	}
	return log, 0
}

// signalContext ends on SIGINT or SIGTERM; a second signal kills at once.
func signalContext() (context.Context, func()) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	return ctx, stop
}

func cmdRun(fs *flag.FlagSet, _, stderr io.Writer) func([]string) int {
	path := fs.String("config", "config.yaml", "config file")
	lf := logFlagsOn(fs, "json")
	return func([]string) int {
		log, code := lf.logger("run", stderr)
		if code != 0 {
			return code
		}
		defer log.Sync()
		set, u, err := config.LoadSet(*path)
		if err != nil {
			log.Error("cannot start: bad config", zap.String("config", *path), zap.Error(err))
			return 1
		}
		defer tuneMemory(log).Stop()
		ctx, stop := signalContext()
		defer stop()
		srv, err := app.New(u.Config, app.Options{ConfigPath: *path, ConfigData: u.MainData, ConfigSet: set, Logger: log, Version: buildVersion()})
		if err == nil {
			err = srv.Listen()
		}
		if err != nil {
			log.Error("cannot start", zap.Error(err))
			return 1
		}
		// SIGHUP is caught before anything is served: one that arrives
		// while the process starts (systemctl reload right after start)
		// reloads, where Go's default would end the process (or, with
		// SIGHUP ignored as under nohup, drop it).
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go forwardSIGHUP(ctx, srv, hup)
		if err := srv.Serve(ctx); err != nil {
			log.Error("canaryd stopped with an error", zap.Error(err))
			return 1
		}
		return 0
	}
}

// forwardSIGHUP turns each SIGHUP into a reload; the outcome is logged by
// the reload itself.
func forwardSIGHUP(ctx context.Context, srv *app.Server, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			srv.Reload(ctx, "SIGHUP")
		}
	}
}

func cmdValidate(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
	path := fs.String("config", "config.yaml", "config file (or name it as the argument)")
	return func(args []string) int {
		if len(args) == 1 {
			*path = args[0]
		}
		_, u, err := config.LoadSet(*path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		cfg := u.Config
		pools, instances, dynamic := 0, 0, 0
		for _, r := range cfg.Routes {
			pools += len(r.Pools)
			for _, p := range r.Pools {
				instances += len(p.Instances)
				if p.Dynamic() {
					dynamic++
				}
			}
		}
		found := ""
		if dynamic > 0 {
			found = fmt.Sprintf(", %d pools with instances from DNS or registrations", dynamic)
		}
		fmt.Fprintf(stdout, "%s: ok (%d routes, %d pools, %d instances%s; listen %s)\n", *path, len(cfg.Routes), pools, instances, found, cfg.Listen)
		return 0
	}
}

func cmdBackend(fs *flag.FlagSet, _, stderr io.Writer) func([]string) int {
	listen := fs.String("listen", "127.0.0.1:9001", "address to serve on")
	pool := fs.String("pool", "blue", "pool name to report")
	latency := fs.Duration("latency", 0, "added latency per answer")
	errRate := fs.Float64("error-rate", 0, "fraction of answers that are 500 (0..1)")
	failPath := fs.String("fail-path", "", "answer 500 to every request whose path starts with this")
	lf := logFlagsOn(fs, "json")
	return func([]string) int {
		log, code := lf.logger("backend", stderr)
		if code != 0 {
			return code
		}
		ctx, stop := signalContext()
		defer stop()
		b := demo.Backend{Pool: *pool, Instance: *listen, Latency: *latency, ErrorRate: *errRate, FailPath: *failPath}
		bs := []demo.Bound{{Addr: *listen, Backend: b}}
		lns, err := demo.Listen(bs)
		if err != nil {
			log.Error("backend cannot start; is something else on that port? choose another with --listen", zap.Error(err))
			return 1
		}
		if err := demo.Serve(ctx, log, bs, lns); err != nil {
			log.Error("backend failed", zap.Error(err))
			return 1
		}
		return 0
	}
}

func cmdLoad(fs *flag.FlagSet, stdout, _ io.Writer) func([]string) int {
	url := fs.String("url", "http://127.0.0.1:8080/", "where to send requests")
	rate := fs.Int("rate", 50, "requests per second")
	every := fs.Duration("every", 5*time.Second, "how often to print the split")
	return func([]string) int {
		ctx, stop := signalContext()
		defer stop()
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		demo.Load(ctx, client, *url, *rate, *every, func(s demo.Split) { fmt.Fprintln(stdout, s) })
		return 0
	}
}

func cmdDemo(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
	listen := fs.String("listen", "", "proxy address (default: the shipped config's listen)")
	adminListen := fs.String("admin", "", "admin address (default: the shipped config's admin.listen)")
	canaryErrors := fs.Float64("canary-errors", 0, "fraction of the last pool's answers that are 500 (0..1)")
	rate := fs.Int("rate", 500, "requests per second from the built-in load generator (0: none)")
	duration := fs.Duration("duration", 0, "stop after this long (0: until Ctrl-C)")
	stepEvery := fs.Duration("interval", 5*time.Second, "rollout analysis interval")
	backendPort := fs.Int("backend-port", 0, "port of the first demo backend; the others follow it as in the shipped config (default: the config's, 9001)")
	lf := logFlagsOn(fs, "console")
	return func([]string) int {
		log, code := lf.logger("demo", stderr)
		if code != 0 {
			return code
		}
		defer log.Sync()
		ctx, stop := signalContext()
		defer stop()
		if *duration > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, *duration)
			defer cancel()
		}
		err := demo.Run(ctx, demo.Options{
			Config: canaryd.DefaultConfig(), Listen: *listen, Admin: *adminListen, CanaryErrors: *canaryErrors,
			Rate: *rate, Interval: *stepEvery, BackendPort: *backendPort, Out: stdout, Log: log,
		})
		var usage demo.UsageError
		switch {
		case errors.As(err, &usage):
			fmt.Fprintln(stderr, "canaryd demo:", err)
			return 2
		case err != nil:
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
}

// tuneMemory gives the runtime a soft memory limit from the cgroup's
// (memlimit), says which, and starts the heap goal's floor unless GOGC is
// set.
func tuneMemory(log *zap.Logger) *memlimit.Floor {
	f := memlimit.StartFloor(memlimit.DefaultFloor)
	if f == nil {
		log.Info("no heap goal floor: GOGC is set", zap.String("GOGC", os.Getenv("GOGC")))
	} else {
		log.Info("heap goal floor (set GOGC to turn it off)", zap.Int("bytes", memlimit.DefaultFloor))
	}
	a, err := memlimit.Apply()
	switch {
	case err != nil:
		log.Warn("the cgroup's memory limit could not be read; no soft memory limit from it (set GOMEMLIMIT)", zap.Error(err))
	case a.Source == "GOMEMLIMIT":
		log.Info("soft memory limit from GOMEMLIMIT", zap.Int64("bytes", a.Limit))
	case a.Limit > 0:
		log.Info("soft memory limit from the cgroup's", zap.Int64("bytes", a.Limit), zap.Int64("cgroup_limit", a.CgroupLimit), zap.String("file", a.Source))
	}
	return f
}
