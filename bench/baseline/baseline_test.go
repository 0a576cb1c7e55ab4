package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// BenchmarkBaselinePath measures the baseline exactly as
// canaryd's BenchmarkProxyPath/handler measures canaryd: the handler called
// in-process, upstreams on real loopback sockets with keep-alive, 90/10.
func BenchmarkBaselinePath(b *testing.B) {
	be := func(name string) *url.URL {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", name)
			io.WriteString(w, name)
		}))
		b.Cleanup(s.Close)
		u, _ := url.Parse(s.URL)
		return u
	}
	rp := newProxy(be("blue"), be("green"), 90)
	b.Cleanup(rp.Transport.(*http.Transport).CloseIdleConnections)
	ctx, cancel := context.WithCancel(context.Background()) // as http.Server gives it
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://example/", nil)
	req.RemoteAddr = "127.0.0.1:5555"
	req.RequestURI = "/"
	rec := httptest.NewRecorder()
	rp.ServeHTTP(rec, req)
	if rec.Code != 200 {
		b.Fatalf("benchmark request answered %d", rec.Code)
	}
	b.ReportAllocs()
	for b.Loop() {
		rp.ServeHTTP(discard{h: http.Header{}}, req)
	}
}

type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(p []byte) (int, error) { return len(p), nil }
func (d discard) WriteHeader(int)             {}
