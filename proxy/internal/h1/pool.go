package h1

import (
	"sync"
	"time"
)

// pool holds the idle keep-alive connections to one address, most recently
// used on top (warm caches, and the cold ones at the bottom age out).
type pool struct {
	t    *Transport
	addr string

	mu    sync.Mutex // held to push or pop one connection, never across I/O
	idle  []*conn
	sweep *time.Timer // armed while idle is not empty
	gone  bool        // the address was closed (CloseIdleTo); stop pooling
}

// get returns an idle connection fit for a request, or nil. A connection
// that became readable while idle (the instance closed it, sent a 408 as it
// timed it out, or sent bytes nobody asked for) is closed, never used: what
// it holds must not be read as the answer to the next request.
func (p *pool) get() *conn {
	for {
		c := p.pop()
		if c == nil || !c.stale() {
			return c
		}
		c.nc.Close()
	}
}

func (p *pool) pop() *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return c
}

// put keeps c for the next request, or closes it when the pool is full or
// the address has been closed. The caller has checked that c's last answer
// ended exactly where its framing said and that nothing else is buffered.
func (p *pool) put(c *conn) {
	c.idleAt = time.Now()
	p.mu.Lock()
	if p.gone || len(p.idle) >= p.t.o.MaxIdlePerHost {
		p.mu.Unlock()
		c.nc.Close()
		return
	}
	p.idle = append(p.idle, c)
	if p.sweep == nil {
		p.sweep = time.AfterFunc(p.t.o.IdleTimeout, p.expire)
	}
	p.mu.Unlock()
}

// expire closes the connections idle for longer than the idle timeout (the
// bottom of the stack) and rearms for the next one to expire.
func (p *pool) expire() {
	now := time.Now()
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleAt) >= p.t.o.IdleTimeout {
		p.idle[n].nc.Close()
		n++
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	if len(p.idle) > 0 {
		p.sweep.Reset(p.t.o.IdleTimeout - now.Sub(p.idle[0].idleAt))
	} else {
		p.sweep = nil
	}
	p.mu.Unlock()
}

// closeIdle closes every idle connection and says how many; gone also
// stops pooling for good.
func (p *pool) closeIdle(gone bool) int {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	p.gone = p.gone || gone
	p.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
	return len(idle)
}
