// Package admin serves canaryd's admin listener: liveness and readiness,
// /metrics, and the admin API under /api/v1/. The rest of the API and the
// dashboard join it in their own issues.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
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
	return mux
}

// mutation guards a state-changing endpoint with the bearer token.
func (o Options) mutation(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.Token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(o.Token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="canaryd"`)
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token (see admin.token_file)"})
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
