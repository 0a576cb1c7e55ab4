// Package handlerbench is the one in-process measure of a proxy handler,
// shared by canaryd's BenchmarkProxyPath/handler and the httputil
// baseline's BenchmarkBaselinePath so that both time the same request the
// same way.
package handlerbench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Run calls h with a GET for "/" as http.Server would hand it over (a
// cancelable context, RemoteAddr, RequestURI), once to check it answers
// 200 (else the benchmark would time an error path), then b.Loop times,
// writing into a ResponseWriter that keeps nothing. setup, if given,
// changes the request first (headers, cookies).
func Run(b *testing.B, h http.Handler, setup ...func(*http.Request)) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://example/", nil)
	req.RemoteAddr = "127.0.0.1:5555"
	req.RequestURI = "/"
	for _, f := range setup {
		f(req)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("benchmark request answered %d; it would measure the wrong path", rec.Code)
	}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(discard{h: http.Header{}}, req)
	}
}

type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(p []byte) (int, error) { return len(p), nil }
func (d discard) WriteHeader(int)             {}
