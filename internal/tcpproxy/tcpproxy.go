// Package tcpproxy is a small TCP forwarder for tests: the L4 balancer in
// front of canaryd replicas (round robin over targets), and the link to
// etcd that a test cuts to partition one member, without root.
package tcpproxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards every connection to the next live target.
type Proxy struct {
	ln      net.Listener
	next    atomic.Uint64
	mu      sync.Mutex
	targets []string
	blocked bool
	conns   map[net.Conn]bool
	wg      sync.WaitGroup
}

// Start listens on a loopback port and forwards to targets; it stops at
// the test's end.
func Start(t testing.TB, targets ...string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, targets: targets, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTargets replaces the targets (new connections only).
func (p *Proxy) SetTargets(targets ...string) {
	p.mu.Lock()
	p.targets = targets
	p.mu.Unlock()
}

// Block cuts the link: open connections are closed and new ones are
// closed as soon as they are accepted. Unblock restores it.
func (p *Proxy) Block() {
	p.mu.Lock()
	p.blocked = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// Unblock restores the link.
func (p *Proxy) Unblock() {
	p.mu.Lock()
	p.blocked = false
	p.mu.Unlock()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Block()
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocked {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(in) {
			in.Close()
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(in)
			p.mu.Lock()
			targets := p.targets
			p.mu.Unlock()
			// Round robin, skipping targets that refuse (a replica that
			// is down), as an L4 balancer's health check would.
			var out net.Conn
			for i := 0; i < len(targets) && out == nil; i++ {
				t := targets[int(p.next.Add(1))%len(targets)]
				out, _ = net.Dial("tcp", t)
			}
			if out == nil {
				return
			}
			if !p.track(out) {
				out.Close()
				return
			}
			defer p.untrack(out)
			done := make(chan struct{}, 2)
			go func() { io.Copy(out, in); closeWrite(out); done <- struct{}{} }()
			go func() { io.Copy(in, out); closeWrite(in); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}
