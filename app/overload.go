package app

import (
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"canaryd/config"
	"canaryd/metrics"
	"canaryd/overload"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// overloadGuard owns server.limits: the limits in force, the listener
// and handler that apply them, and the refusals' metric and log.
type overloadGuard struct {
	limits  overload.Limits
	nofile  int
	log     *zap.Logger
	metrics *metrics.Overload
	handler *overload.Handler
	ln      atomic.Pointer[overload.Listener] // set by frontListener
	// lastLog is when a refusal was last logged (Unix ns), and since how
	// many refusals went unlogged: at most one line a second.
	lastLog  atomic.Int64
	unlogged atomic.Int64
}

// descriptorLimit is RLIMIT_NOFILE's soft limit, which Go raises to the
// hard one at start.
func descriptorLimit() (int, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("reading the descriptor limit (RLIMIT_NOFILE): %w; set server.limits.max_connections and max_requests_in_flight", err)
	}
	return int(min(rl.Cur, 1<<30)), nil
}

// setupOverload derives the limits and wraps the proxy's handler. After
// setupProxy.
func (s *Server) setupOverload(cfg *config.Config, reg prometheus.Registerer) error {
	l := cfg.Server.Limits
	set := overload.Limits{
		MaxConnections: l.MaxConnections, MaxConnectionsPerClient: l.MaxConnectionsPerClient,
		MaxRequestsInFlight: l.MaxRequestsInFlight, MaxRequestsInFlightPerClient: l.MaxRequestsInFlightPerClient,
	}
	nofile, err := descriptorLimit()
	if err != nil {
		if set.MaxConnections == 0 || set.MaxRequestsInFlight == 0 {
			return err
		}
		nofile = 1 << 20
	}
	g := &overloadGuard{limits: overload.Derive(set, nofile), nofile: nofile, log: s.log.Named("overload")}
	g.handler = overload.NewHandler(s.proxy.Handler, overload.HandlerOptions{
		Max: g.limits.MaxRequestsInFlight, MaxPerClient: g.limits.MaxRequestsInFlightPerClient,
		Trusted: s.trusted, Refused: g.refused,
	})
	s.proxy.Handler = g.handler
	g.metrics = metrics.NewOverload(reg, map[string]int{
		string(overload.MaxConnections):               g.limits.MaxConnections,
		string(overload.MaxConnectionsPerClient):      g.limits.MaxConnectionsPerClient,
		string(overload.MaxRequestsInFlight):          g.limits.MaxRequestsInFlight,
		string(overload.MaxRequestsInFlightPerClient): g.limits.MaxRequestsInFlightPerClient,
	}, g.open, g.handler.InFlight)
	s.overload = g
	return nil
}

func (g *overloadGuard) open() int {
	if ln := g.ln.Load(); ln != nil {
		return ln.Open()
	}
	return 0
}

// logLimits says at start what the process runs with.
func (g *overloadGuard) logLimits() {
	g.log.Info("overload limits",
		zap.Int("descriptor_limit", g.nofile), zap.Int("headroom", overload.Headroom(g.nofile)),
		zap.Int("max_connections", g.limits.MaxConnections), zap.Int("max_connections_per_client", g.limits.MaxConnectionsPerClient),
		zap.Int("max_requests_in_flight", g.limits.MaxRequestsInFlight), zap.Int("max_requests_in_flight_per_client", g.limits.MaxRequestsInFlightPerClient))
}

// listenerOptions are the connection limits for frontListener.
func (g *overloadGuard) listenerOptions(exempt func(netip.Addr) bool) overload.ListenerOptions {
	return overload.ListenerOptions{
		Max: g.limits.MaxConnections, MaxPerClient: g.limits.MaxConnectionsPerClient,
		Exempt: exempt, Refused: g.refused,
	}
}

// refused counts a refusal and logs at most one line a second, with how
// many went unlogged before it: a flood must not become a flood of logs.
func (g *overloadGuard) refused(lim overload.Limit, client netip.Addr) {
	g.metrics.Refused(string(lim))
	now := time.Now().UnixNano()
	last := g.lastLog.Load()
	if now-last < int64(time.Second) || !g.lastLog.CompareAndSwap(last, now) {
		g.unlogged.Add(1)
		return
	}
	g.log.Warn("refused over server.limits (logged at most once a second; canaryd_overload_refused_total counts them all)",
		zap.String("limit", string(lim)), zap.Stringer("client", client), zap.Int64("refused_since_last_line", g.unlogged.Swap(0)))
}

// serverLogLines is how many lines a second the proxy's http.Server may
// log (failed TLS handshakes, requests it refuses itself): clients cause
// them, so a flood of bad connections must not become a flood of logs.
const serverLogLines = 10

// limitedLog passes at most serverLogLines lines a second to w, then says
// how many it dropped when the next second begins.
type limitedLog struct {
	w       io.Writer
	mu      sync.Mutex
	second  int64 // the Unix second being counted
	lines   int
	dropped int
}

func (l *limitedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now().Unix()
	if now != l.second {
		if l.dropped > 0 {
			fmt.Fprintf(l.w, "http: %d more lines like the ones before were dropped (at most %d a second are logged)", l.dropped, serverLogLines)
		}
		l.second, l.lines, l.dropped = now, 0, 0
	}
	if l.lines >= serverLogLines {
		l.dropped++
		return len(p), nil
	}
	l.lines++
	return l.w.Write(p)
}
