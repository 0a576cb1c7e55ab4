package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"canaryd/bench/handlerbench"
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
	handlerbench.Run(b, rp)
}
