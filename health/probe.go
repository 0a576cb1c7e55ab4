package health

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"time"

	"canaryd/panics"
)

// maxProbeBody bounds what a probe reads of an answer: enough to let the
// connection be reused, never a large page into memory.
const maxProbeBody = 4 << 10

// prober sends probes on its own client: probe traffic never competes for
// the proxy's connection pool, and never follows redirects.
type prober struct {
	transport *http.Transport
	client    *http.Client
}

// maxIdleProbeConns bounds the probe connections kept open between
// probes, across every instance. An idle keep-alive connection of
// net/http costs two goroutines and 8 KiB of buffers (about 25 KiB in
// all): 5,000 probed instances kept 10,000 goroutines and 125 MiB of
// memory for connections used once every 5 s. Up to this many instances
// keep theirs (a small deployment: every one); beyond it, the least
// recently used are closed, and their next probe dials.
const maxIdleProbeConns = 1024

func newProber() *prober {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        maxIdleProbeConns,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &prober{transport: tr, client: &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (p *prober) close() { p.transport.CloseIdleConnections() }

// client is the prober's own client, or one on the pool's transport.
func (p *prober) clientFor(cfg Config) *http.Client {
	if cfg.Transport == nil {
		return p.client
	}
	return &http.Client{Transport: cfg.Transport, CheckRedirect: p.client.CheckRedirect}
}

// check runs one probe; it returns "" when it passed, else why it failed.
func (p *prober) check(ctx context.Context, target *url.URL, cfg Config) string {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if cfg.GRPC {
		return grpcCheck(ctx, p.clientFor(cfg), target, cfg)
	}
	u := *target
	u.Path += cfg.ProbePath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err.Error()
	}
	req.Header.Set("User-Agent", "canaryd-health")
	resp, err := p.clientFor(cfg).Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return fmt.Sprintf("GET %s: no answer within %v", cfg.ProbePath, cfg.Timeout)
		}
		return fmt.Sprintf("GET %s: %v", cfg.ProbePath, err)
	}
	io.CopyN(io.Discard, resp.Body, maxProbeBody)
	resp.Body.Close()
	if resp.StatusCode < cfg.StatusLo || resp.StatusCode > cfg.StatusHi {
		why := fmt.Sprintf("GET %s: status %d, want %d-%d", cfg.ProbePath, resp.StatusCode, cfg.StatusLo, cfg.StatusHi)
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			// The likeliest cause by far: a server with no such path (any
			// server that is not an app with a health endpoint).
			why += " (the instance has no such path: set health.active.path to one it answers, such as /, or remove health.active)"
		}
		return why
	}
	return ""
}

// probeLoop probes one instance until ctx ends. Rise passes in a row bring
// it back, Fall failures in a row take it out; a single odd answer changes
// nothing. While it is down, probes come every UnhealthyInterval.
func (c *Checker) probeLoop(ctx context.Context, in *Instance, target *url.URL, cfg Config, awaitFirst bool) {
	defer c.wg.Done()
	defer panics.Recover(c.onPanic, "health probe")
	passes, fails := 0, 0
	// The first probe goes out within one jitter of the start, so that a
	// restart does not probe every instance at the same instant.
	timer := time.NewTimer(jitter(cfg.Interval, cfg.JitterPercent) - cfg.Interval + time.Millisecond)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		why := c.prober.check(ctx, target, cfg)
		if ctx.Err() != nil {
			return
		}
		if why == "" {
			passes, fails = passes+1, 0
		} else {
			passes, fails = 0, fails+1
			if in.h.Ejected.Load() {
				in.h.ProbeFailedSinceEjection.Store(true)
			}
		}
		down := in.h.ProbeDown.Load()
		if !down || fails > 0 {
			awaitFirst = false // in once, or failing: the usual rise from here
		}
		switch {
		case down && awaitFirst && passes >= 1:
			c.setProbe(in, false, "a new instance: its first probe passed")
		case down && passes >= cfg.Rise:
			c.setProbe(in, false, fmt.Sprintf("%d probes in a row passed", passes))
		case !down && fails >= cfg.Fall:
			c.setProbe(in, true, fmt.Sprintf("%d probes in a row failed; last: %s", fails, why))
		case !down && passes >= cfg.Rise && in.h.Ejected.Load() && in.h.ProbeFailedSinceEjection.Load():
			c.setProbe(in, false, fmt.Sprintf("probes failed during the ejection, then %d passed in a row", passes))
		}
		next := cfg.Interval
		if in.h.ProbeDown.Load() {
			next = cfg.UnhealthyInterval
		}
		timer.Reset(jitter(next, cfg.JitterPercent))
	}
}

// setProbe records a probe verdict. Probes that recover also lift a passive
// ejection (Envoy lifts it on any passing probe): the instance failed its
// probes during the ejection and passes them again, which is what the
// ejection was waiting for. Probes that never failed do not lift it: an
// instance can pass /healthz and still fail real traffic.
func (c *Checker) setProbe(in *Instance, down bool, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	in.h.ProbeDown.Store(down)
	if !down && in.h.Ejected.Load() {
		in.h.Ejected.Store(false)
		in.unejectedAt = time.Now()
		reason += "; passive ejection lifted"
	}
	c.reportLocked(in, Active, reason, 0)
}

// jitter returns d plus up to pct percent of d, at random.
func jitter(d time.Duration, pct int) time.Duration {
	if pct <= 0 {
		return d
	}
	return d + time.Duration(rand.Int64N(int64(d)*int64(pct)/100+1))
}
