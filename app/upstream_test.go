package app

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// headerOrder is an instance that answers every request and records the
// order of the header field names it received, as they came on the wire.
func headerOrder(t *testing.T) (url string, orders func() [][]string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got [][]string
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for {
					var names []string
					if _, err := br.ReadString('\n'); err != nil { // the request line
						return
					}
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if line == "\r\n" {
							break
						}
						if name, _, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(name, "X-Order-") {
							names = append(names, name)
						}
					}
					mu.Lock()
					got = append(got, names)
					mu.Unlock()
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), func() [][]string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// upstream.fast_path: false sends every request through http.Transport,
// with no rebuild: seen from the instance, the header fields then always
// come sorted by name (http.Header.Write sorts them), where the fast path
// writes them in the map's order.
func TestFastPathOffSwitch(t *testing.T) {
	for _, tc := range []struct {
		name, top string
		fast      bool
	}{{"default", "", true}, {"fast_path false", "upstream: { fast_path: false }", false}} {
		t.Run(tc.name, func(t *testing.T) {
			url, orders := headerOrder(t)
			r := startRig(t, oneRouteConfig(t, tc.top, "", url))
			for i := 0; i < 20; i++ {
				req, _ := http.NewRequest("GET", r.proxy+"/", nil)
				for _, k := range []string{"A", "B", "C", "D", "E", "F", "G", "H"} {
					req.Header.Set("X-Order-"+k, k)
				}
				resp, err := r.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			sorted := 0
			for _, o := range orders() {
				if len(o) != 8 {
					t.Fatalf("the instance saw %v", o)
				}
				if slices.IsSorted(o) {
					sorted++
				}
			}
			if !tc.fast && sorted != 20 {
				t.Errorf("fast_path false: %d of 20 requests had sorted fields; http.Transport sorts them all", sorted)
			}
			if tc.fast && sorted == 20 {
				t.Error("fast path on: every request had sorted fields, as http.Transport writes them; the fast path was not used")
			}
		})
	}
}
