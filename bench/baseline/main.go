// Command baseline is the reverse proxy a user would write by hand with
// httputil: a weighted random pick between two upstreams and a transport
// with more idle connections than Go's default. canaryd is measured
// against it (bench/run.sh).
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
	flag.Parse()
	ua, err := url.Parse(*a)
	if err != nil {
		log.Fatal(err)
	}
	ub, err := url.Parse(*b)
	if err != nil {
		log.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	rp := &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			target := ub
			if rand.IntN(100) < *weight {
				target = ua
			}
			pr.SetURL(target)
			pr.SetXForwarded()
		},
	}
	log.Fatal(http.ListenAndServe(*listen, rp))
}
