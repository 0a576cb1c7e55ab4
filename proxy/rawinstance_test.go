package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawInstance is an instance on a loopback socket that answers each request
// with exactly the bytes its script names, and records each request it
// parsed with the connection it came on. It is the hostile (or buggy) peer of
// the conformance suite: nothing in it is http.Server's.
type rawInstance struct {
	ln     net.Listener
	URL    string
	script func(r *rawRequest) []act

	mu    sync.Mutex
	reqs  []*rawRequest
	conns int // accepted so far
	open  map[net.Conn]struct{}
	acted map[string]int // how many times each path's script has run to its end
	wg    sync.WaitGroup
}

// rawRequest is one request as the instance parsed it.
type rawRequest struct {
	Conn, Seq int // connection number and index on it, from 0
	Method    string
	Path      string // the request target as sent
	Host      string
	Header    http.Header
	Body      string
	BodyErr   error
}

// act is one step of an answer. Exactly one field is set.
type act struct {
	write []byte        // bytes to send as they are, in one write
	pause time.Duration // wait before the next step
	close bool          // close the connection (FIN)
	reset bool          // reset the connection (RST): no more steps
	echo  bool          // from now on send back what is received (a tunnel)
	// drain reads the request's body before going on; by default the body
	// is read before the script runs, so this is for early answers.
	drain bool
}

func send(s string) act         { return act{write: []byte(s)} }
func pause(d time.Duration) act { return act{pause: d} }
func closeConn() act            { return act{close: true} }
func resetConn() act            { return act{reset: true} }
func answer(status, b string) act { // a well-formed answer with a length
	return send(fmt.Sprintf("HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s", status, len(b), b))
}

// earlyPaths have their script run before their body is read; the script
// drains it (act.drain) when it wants to.
const earlyPrefix = "/early"

func newRawInstance(t testing.TB, script func(r *rawRequest) []act) *rawInstance {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in := &rawInstance{ln: ln, URL: "http://" + ln.Addr().String(), script: script,
		open: map[net.Conn]struct{}{}, acted: map[string]int{}}
	in.wg.Add(1)
	go in.accept()
	t.Cleanup(in.close)
	return in
}

func (in *rawInstance) close() {
	in.ln.Close()
	in.mu.Lock()
	for c := range in.open {
		c.Close()
	}
	in.mu.Unlock()
	in.wg.Wait()
}

func (in *rawInstance) accept() {
	defer in.wg.Done()
	for {
		c, err := in.ln.Accept()
		if err != nil {
			return
		}
		in.mu.Lock()
		n := in.conns
		in.conns++
		in.open[c] = struct{}{}
		in.mu.Unlock()
		in.wg.Add(1)
		go in.serve(c, n)
	}
}

func (in *rawInstance) serve(c net.Conn, n int) {
	defer in.wg.Done()
	defer func() {
		c.Close()
		in.mu.Lock()
		delete(in.open, c)
		in.mu.Unlock()
	}()
	br := bufio.NewReader(c)
	for seq := 0; ; seq++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		r := &rawRequest{Conn: n, Seq: seq, Method: req.Method, Path: req.RequestURI, Host: req.Host, Header: req.Header}
		readBody := func() {
			b, err := io.ReadAll(req.Body)
			r.Body, r.BodyErr = string(b), err
		}
		if !strings.HasPrefix(req.URL.Path, earlyPrefix) {
			readBody()
		}
		in.mu.Lock()
		in.reqs = append(in.reqs, r)
		in.mu.Unlock()
		acts := in.script(r)
		done := func() {
			in.mu.Lock()
			in.acted[req.URL.Path]++
			in.mu.Unlock()
		}
		for _, a := range acts {
			switch {
			case len(a.write) > 0:
				if _, err := c.Write(a.write); err != nil {
					done()
					return
				}
			case a.pause > 0:
				time.Sleep(a.pause)
			case a.drain:
				readBody()
			case a.close:
				done()
				return
			case a.reset:
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
				done()
				return
			case a.echo:
				done()
				io.Copy(c, br)
				return
			}
		}
		done()
		if strings.HasPrefix(req.URL.Path, earlyPrefix) {
			io.Copy(io.Discard, req.Body) // what the script left
		}
	}
}

// requests is what the instance received, in order.
func (in *rawInstance) requests() []*rawRequest {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]*rawRequest(nil), in.reqs...)
}

// paths lists the targets received, in order.
func (in *rawInstance) paths() []string {
	var out []string
	for _, r := range in.requests() {
		out = append(out, r.Path)
	}
	return out
}

// waitActed waits until the script for path has run to its end (once).
func (in *rawInstance) waitActed(t testing.TB, path string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		in.mu.Lock()
		n := in.acted[path]
		in.mu.Unlock()
		if n > 0 {
			return
		}
	}
	t.Fatalf("the instance's script for %s did not end within 5s", path)
}

// rawAnswer is what a client read from canaryd on a raw socket.
type rawAnswer struct {
	informational []int // 1xx codes before the final answer
	status        int   // 0: no final answer (the connection closed or broke)
	header        http.Header
	body          string
	bodyErr       error // the body broke off
	closed        bool  // the connection was closed after the answer
}

// dialRaw connects to addr, with a deadline that bounds the test.
func dialRaw(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// rawClient sends exact bytes to addr and reads the answers to them: a
// client that canaryd cannot make friendlier.
func rawClient(t testing.TB, addr, raw, method string) rawAnswer {
	return rawExchange(t, addr, raw, method, false)
}

// rawExchange is rawClient; seeClose also finds out whether canaryd closed
// the connection after the answer (which costs a short wait).
func rawExchange(t testing.TB, addr, raw, method string, seeClose bool) rawAnswer {
	t.Helper()
	c, br := dialRaw(t, addr)
	defer c.Close()
	// A write cut short is no failure: canaryd may answer (431, 400) and
	// close before it has read all of a hostile request. The answer, if
	// any, is still there to read.
	io.WriteString(c, raw)
	a := readRawAnswer(br, method)
	if seeClose && a.status != 0 && a.bodyErr == nil {
		// Is the connection closed after the answer? A kept one stays open
		// past a short wait; a closed one reads EOF (or a reset) at once.
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := br.Peek(1)
		var ne net.Error
		a.closed = err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	return a
}

func readRawAnswer(br *bufio.Reader, method string) rawAnswer {
	var a rawAnswer
	req, _ := http.NewRequest(method, "http://x/", nil)
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return a
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			a.informational = append(a.informational, resp.StatusCode)
			continue
		}
		a.status, a.header = resp.StatusCode, resp.Header
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b, err := io.ReadAll(resp.Body)
			a.body, a.bodyErr = string(b), err
		}
		return a
	}
}
