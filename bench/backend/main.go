// Command backend answers every request with the same 128 bytes: the cheap
// static backend of bench/run.sh when nginx is not installed.
package main

import (
	"flag"
	"log"
	"net/http"
	"strings"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18001", "address to serve on")
	flag.Parse()
	body := []byte(strings.Repeat("x", 127) + "\n")
	log.Fatal(http.ListenAndServe(*listen, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})))
}
