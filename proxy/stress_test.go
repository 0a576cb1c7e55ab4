package proxy

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// junk is a whole answer an instance sends where none was asked for. Its
// X-Id names no request, so a client that gets it got someone else's bytes.
const junk = "HTTP/1.1 200 OK\r\nX-Id: junk\r\nContent-Length: 4\r\n\r\njunk"

// misbehave answers r with its own id, and on a few percent of answers adds
// what the desync cases of the conformance suite send: bytes past the
// Content-Length, bytes after the last chunk, a HEAD body, a body after a
// 204, an idle 408 and close, an idle close. Each answer goes out in one
// write, with what it adds, so that the extra bytes are on the connection
// before canaryd can pick it for another request.
func misbehave(rng *rand.Rand, r *rawRequest) []act {
	id := strings.TrimPrefix(r.Path, "/r/")
	ok := fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Id: %s\r\nContent-Length: %d\r\n\r\n%s", id, len(id), id)
	if r.Method == http.MethodHead {
		return []act{send(ok)} // the body of a HEAD answer: never sent to anyone
	}
	switch n := rng.IntN(1000); {
	case n < 10:
		return []act{send(ok + junk)}
	case n < 20:
		return []act{send(fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Id: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n%s", id, len(id), id, junk))}
	case n < 30:
		return []act{send(fmt.Sprintf("HTTP/1.1 204 No Content\r\nX-Id: %s\r\n\r\n%s", id, junk))}
	case n < 35:
		return []act{send(ok + "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"), closeConn()}
	case n < 40:
		return []act{send(ok), closeConn()}
	case n < 100:
		return []act{send(fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Id: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", id, len(id), id))}
	}
	return []act{send(ok)}
}

// Many clients through canaryd to an instance that misbehaves on a few
// percent of its answers: no client ever gets another request's answer.
func TestNoClientGetsAnotherRequestsAnswer(t *testing.T) {
	total := 100_000
	if testing.Short() {
		total = 10_000
	}
	for _, fast := range []bool{true, false} {
		n := total
		if !fast {
			n = total / 5 // the reference, for comparison
		}
		t.Run(pathName(fast), func(t *testing.T) { stressDesync(t, fast, n, 32) })
	}
}

func stressDesync(t *testing.T, fast bool, total, clients int) {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	in := newRawInstance(t, func(r *rawRequest) []act {
		mu.Lock()
		defer mu.Unlock()
		return misbehave(rng, r)
	})
	addr := conformanceRig(t, in, fast)
	ct := &http.Transport{MaxIdleConnsPerHost: clients}
	defer ct.CloseIdleConnections()
	client := &http.Client{Transport: ct, Timeout: 10 * time.Second}

	var mismatched, failed atomic.Int64
	var first atomic.Pointer[string]
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < total/clients; i++ {
				id := fmt.Sprintf("%d-%d", c, i)
				method := http.MethodGet
				if i%100 == 7 {
					method = http.MethodHead
				}
				req, _ := http.NewRequest(method, "http://"+addr+"/r/"+id, nil)
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				got := resp.Header.Get("X-Id")
				switch {
				case err != nil || resp.StatusCode >= 400:
					failed.Add(1) // the instance's own failure (a 408 race, a close): allowed
				case got != id || (method == http.MethodGet && resp.StatusCode == 200 && string(b) != id) ||
					(resp.StatusCode == 204 || method == http.MethodHead) && len(b) != 0:
					if mismatched.Add(1) == 1 {
						s := fmt.Sprintf("%s %s got %d X-Id %q body %q", method, id, resp.StatusCode, got, b)
						first.Store(&s)
					}
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	t.Logf("%d requests from %d clients in %v: %d answered another request's bytes, %d failed (the instance's closes and 408s)",
		total, clients, d.Round(time.Millisecond), mismatched.Load(), failed.Load())
	if n := mismatched.Load(); n != 0 && fast {
		t.Errorf("%d clients got another request's answer; the first: %s", n, *first.Load())
	} else if n != 0 {
		// http.Transport returns a connection to its pool a moment before
		// it looks at what else it read with the answer, and a request
		// that takes the connection in that moment gets those bytes. It
		// is the reference here, not the subject: this is measured,
		// not held (docs/reliability.md).
		t.Logf("http.Transport gave %d clients another request's bytes; the first: %s", n, *first.Load())
	}
	if n := failed.Load(); n > int64(total)/50 {
		t.Errorf("%d of %d requests failed; the instance closes or times out on 1%% of answers", n, total)
	}
}
