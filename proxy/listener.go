package proxy

import (
	"io"
	"net"
	"runtime"
	"sync/atomic"
)

// Listener wraps the proxy's listener so that its connections waste fewer
// read syscalls. After http.Server writes an answer on a keep-alive
// connection it reads at once for the next request, which the client,
// still reading the answer, has not sent: the read fails (EAGAIN) and only
// then does the goroutine wait. A connection from Listener yields to the
// other goroutines once before that read, which gives the client the time
// to send; the read then usually finds the request. Yielding is always
// safe: the read that follows is an ordinary one.
type Listener struct{ net.Listener }

// Accept returns the next connection, wrapped when it is a TCP one.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		return &yieldConn{TCPConn: tc}, nil
	}
	return c, err
}

type yieldConn struct {
	*net.TCPConn
	wrote atomic.Bool // an answer went out since the last read
}

func (c *yieldConn) Read(p []byte) (int, error) {
	if c.wrote.Load() && c.wrote.Swap(false) {
		runtime.Gosched()
	}
	return c.TCPConn.Read(p)
}

func (c *yieldConn) Write(p []byte) (int, error) {
	c.wrote.Store(true)
	return c.TCPConn.Write(p)
}

// ReadFrom keeps the TCP connection's sendfile path for the server.
func (c *yieldConn) ReadFrom(r io.Reader) (int64, error) {
	c.wrote.Store(true)
	return c.TCPConn.ReadFrom(r)
}
