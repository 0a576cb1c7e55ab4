// Package admin serves canaryd's admin listener: liveness and readiness,
// /metrics, and the admin API under /api/v1/. The rest of the API and the
// dashboard join it in their own issues.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"canaryd/rollout"
)

// ReloadResult is the answer to POST /api/v1/reload.
type ReloadResult struct {
	// Result is "applied", "unchanged" or "failed".
	Result string `json:"result"`
	// Hash is the first 16 hex digits of the file's SHA-256, when read.
	Hash string `json:"hash,omitempty"`
	// Error says why a reload failed, one problem a line.
	Error string `json:"error,omitempty"`
}

// Options wires the admin handler. Zero values disable what they serve.
type Options struct {
	// Ready reports whether the proxy takes traffic. Required.
	Ready func() bool
	// Metrics serves /metrics. Default: not served.
	Metrics http.Handler
	// Reload runs one config reload and reports it. Default: the reload
	// endpoint answers 404.
	Reload func(ctx context.Context) ReloadResult
	// Token, when not empty, must come as "Authorization: Bearer <token>"
	// on every mutation. Default "" (no token: keep the admin on loopback).
	Token string
	// Routes serves /api/v1/routes. Default: not served.
	Routes Routes
}

// Routes is what the routes API reads and steers.
type Routes interface {
	Routes() []RouteView
	// Control runs promote, abort, pause or resume on a route's rollout.
	Control(route, action string) (*rollout.Status, error)
}

// ErrUnknownRoute is returned by Control for a route that does not exist.
var ErrUnknownRoute = errors.New("no such route")

// RouteView is one route as the API shows it.
type RouteView struct {
	Name       string          `json:"name"`
	Host       string          `json:"host,omitempty"`
	PathPrefix string          `json:"path_prefix"`
	Pools      []PoolView      `json:"pools"`
	Rollout    *rollout.Status `json:"rollout,omitempty"`
}

// PoolView is one pool: weights, health, and its last minute of traffic.
type PoolView struct {
	Name string `json:"name"`
	// Weight in percent, as set by the config or the rollout.
	Weight float64 `json:"weight"`
	// EffectiveWeight in percent, after health moved shares.
	EffectiveWeight float64        `json:"effective_weight"`
	Panic           bool           `json:"panic"`
	Instances       []InstanceView `json:"instances"`
	LastMinute      Traffic        `json:"last_minute"`
}

// InstanceView is one instance.
type InstanceView struct {
	Addr     string `json:"addr"`
	Healthy  bool   `json:"healthy"`
	InFlight int64  `json:"in_flight"`
}

// Traffic summarizes a span of a pool's requests.
type Traffic struct {
	Requests  uint64  `json:"requests"`
	Errors    uint64  `json:"errors"`
	Cancelled uint64  `json:"cancelled"`
	ErrorRate float64 `json:"error_rate"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
}

// New returns the admin handler.
func New(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		text(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if o.Ready() {
			text(w, http.StatusOK, "ready")
			return
		}
		text(w, http.StatusServiceUnavailable, "not ready")
	})
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics)
	}
	if o.Reload != nil {
		mux.Handle("POST /api/v1/reload", o.mutation(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
			defer cancel()
			res := o.Reload(ctx)
			status := http.StatusOK
			if res.Result == "failed" {
				status = http.StatusUnprocessableEntity
			}
			writeJSON(w, status, res)
		}))
	}
	if o.Routes != nil {
		mux.HandleFunc("GET /api/v1/routes", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, o.Routes.Routes())
		})
		mux.HandleFunc("GET /api/v1/routes/{route}", func(w http.ResponseWriter, r *http.Request) {
			for _, rv := range o.Routes.Routes() {
				if rv.Name == r.PathValue("route") {
					writeJSON(w, http.StatusOK, rv)
					return
				}
			}
			writeError(w, http.StatusNotFound, fmt.Sprintf("no route %q", r.PathValue("route")))
		})
		mux.Handle("POST /api/v1/routes/{route}/{action}", o.mutation(func(w http.ResponseWriter, r *http.Request) {
			action := r.PathValue("action")
			switch action {
			case "promote", "abort", "pause", "resume":
			default:
				writeError(w, http.StatusNotFound, fmt.Sprintf("no action %q; use promote, abort, pause or resume", action))
				return
			}
			st, err := o.Routes.Control(r.PathValue("route"), action)
			switch {
			case errors.Is(err, ErrUnknownRoute), errors.Is(err, rollout.ErrNoRollout):
				writeError(w, http.StatusNotFound, fmt.Sprintf("route %q: %v", r.PathValue("route"), err))
			case err != nil:
				writeError(w, http.StatusConflict, err.Error())
			default:
				writeJSON(w, http.StatusOK, st)
			}
		}))
	}
	return mux
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// mutation guards a state-changing endpoint with the bearer token.
func (o Options) mutation(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.Token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(o.Token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="canaryd"`)
				writeError(w, http.StatusUnauthorized, "missing or wrong bearer token (see admin.token_file)")
				return
			}
		}
		h(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func text(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}
