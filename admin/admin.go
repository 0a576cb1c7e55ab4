// Package admin serves canaryd's admin listener. Today: liveness and
// readiness for orchestrators and load balancers; the admin API, /metrics
// and the dashboard join it in their own issues.
package admin

import (
	"io"
	"net/http"
)

// New returns the admin handler. ready reports whether the proxy takes
// traffic; it turns false the moment a shutdown begins, so a load balancer
// stops sending before the listener closes.
func New(ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		text(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready() {
			text(w, http.StatusOK, "ready")
			return
		}
		text(w, http.StatusServiceUnavailable, "not ready")
	})
	return mux
}

func text(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}
