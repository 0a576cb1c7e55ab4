// Package demo provides what `canaryd demo` and `canaryd backend` run: a
// backend that says which pool answered (with tunable latency and error
// rate), and a load generator that reports the split it observes.
package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// HeaderPool is set by demo backends on every answer.
const HeaderPool = "X-Demo-Pool"

// Backend is one demo instance.
type Backend struct {
	// Pool is the pool name the backend reports. Required.
	Pool string
	// Instance is its address, reported too. Default "".
	Instance string
	// Latency is added to every answer. Default 0.
	Latency time.Duration
	// ErrorRate is the fraction of answers that are 500s (0..1). Default 0.
	ErrorRate float64
	// FailPath: requests whose path starts with it are all answered 500,
	// the path a release broke (or an attacker aims at). Default "" (none).
	FailPath string
}

// ServeHTTP answers with a small JSON document; /healthz always answers 200.
// A query parameter delay=DURATION holds that answer that long (a long
// request, for drain tests).
func (b Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		io.WriteString(w, "ok\n")
		return
	}
	wait := b.Latency
	if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil && d > 0 && d <= time.Minute {
		wait += d
	}
	if wait > 0 {
		select {
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set(HeaderPool, b.Pool)
	w.Header().Set("Content-Type", "application/json")
	status := http.StatusOK
	if b.ErrorRate > 0 && rand.Float64() < b.ErrorRate || b.FailPath != "" && strings.HasPrefix(r.URL.Path, b.FailPath) {
		status = http.StatusInternalServerError
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"pool": b.Pool, "instance": b.Instance, "status": status,
		"path": r.URL.Path, "request_id": r.Header.Get("X-Request-Id"),
	})
}

// Split is what the load generator saw over one report period.
type Split struct {
	Period   time.Duration
	Requests int
	ByPool   map[string]int // by X-Demo-Pool of the answer
	Errors   int            // transport errors and answers >= 500
}

func (s Split) String() string {
	if s.Requests == 0 {
		return fmt.Sprintf("last %v: no answers", s.Period)
	}
	names := make([]string, 0, len(s.ByPool))
	for n := range s.ByPool {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "last %v: %d requests", s.Period, s.Requests)
	for _, n := range names {
		fmt.Fprintf(&b, ", %s %.1f%%", n, 100*float64(s.ByPool[n])/float64(s.Requests))
	}
	fmt.Fprintf(&b, ", %d errors", s.Errors)
	return b.String()
}

// Load sends rate requests per second to url until ctx ends, and calls
// report with the split seen every period.
func Load(ctx context.Context, client *http.Client, url string, rate int, period time.Duration, report func(Split)) {
	if rate <= 0 {
		rate = 50
	}
	var (
		mu  sync.Mutex
		cur = Split{Period: period, ByPool: map[string]int{}}
		wg  sync.WaitGroup
	)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	rep := time.NewTicker(period)
	defer rep.Stop()
	sem := make(chan struct{}, 64) // bound concurrency when the proxy is slow
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-rep.C:
			mu.Lock()
			s := cur
			cur = Split{Period: period, ByPool: map[string]int{}}
			mu.Unlock()
			report(s)
		case <-tick.C:
			select {
			case sem <- struct{}{}:
			default:
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				pool, failed := one(ctx, client, url)
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				cur.Requests++
				if pool != "" {
					cur.ByPool[pool]++
				}
				if failed {
					cur.Errors++
				}
				mu.Unlock()
			}()
		}
	}
}

func one(ctx context.Context, client *http.Client, url string) (pool string, failed bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", true
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", true
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get(HeaderPool), resp.StatusCode >= 500
}
