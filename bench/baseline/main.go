// Command baseline is the reverse proxy a user would write by hand with
// httputil: a weighted random pick between two upstreams and a transport
// with more idle connections than Go's default. canaryd is measured
// against it (bench/run.sh), and so is its allocation count per request
// (BenchmarkBaselinePath, next to canaryd's BenchmarkProxyPath).
package main

import (
	"flag"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/url"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18100", "address to serve on")
	a := flag.String("a", "http://127.0.0.1:18001", "upstream taking -weight percent")
	b := flag.String("b", "http://127.0.0.1:18002", "the other upstream")
	weight := flag.Int("weight", 90, "percent of requests to -a")
	cert := flag.String("cert", "", "serve TLS (and HTTP/2, Go's default with TLS) with this certificate file")
	key := flag.String("key", "", "the key file of -cert")
	flag.Parse()
	ua, err := url.Parse(*a)
	if err != nil {
		log.Fatal(err)
	}
	ub, err := url.Parse(*b)
	if err != nil {
		log.Fatal(err)
	}
	if *cert != "" {
		log.Fatal(http.ListenAndServeTLS(*listen, *cert, *key, newProxy(ua, ub, *weight)))
	}
	log.Fatal(http.ListenAndServe(*listen, newProxy(ua, ub, *weight)))
}

// newProxy sends weight percent of requests to a, the rest to b.
func newProxy(a, b *url.URL, weight int) *httputil.ReverseProxy {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	return &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			target := b
			if rand.IntN(100) < weight {
				target = a
			}
			pr.SetURL(target)
			pr.SetXForwarded()
		},
	}
}
