//go:build linux || darwin

package h1

import (
	"syscall"
	"unsafe"
)

// peekState is the idle check's scratch space, kept on the connection so
// that the check allocates nothing.
type peekState struct {
	fn  func(fd uintptr) bool // conn.peekSocket, bound once
	buf [1]byte
	n   uintptr
	err syscall.Errno
}

// stale reports whether an idle connection has become readable: the
// instance sent something (a 408, a stray body, anything) or closed it. It
// asks the socket without waiting and without taking a byte (MSG_PEEK |
// MSG_DONTWAIT): one syscall, where http.Transport keeps a goroutine
// parked in a read on every idle connection to notice the same.
func (c *conn) stale() bool {
	if c.br.Buffered() > 0 {
		return true
	}
	if c.raw == nil {
		return false
	}
	if err := c.raw.Read(c.peek.fn); err != nil {
		return true
	}
	return c.peek.err != syscall.EAGAIN
}

// peekSocket is the RawConn callback: it always reports done, so the
// runtime never waits for readability.
func (c *conn) peekSocket(fd uintptr) bool {
	c.peek.n, _, c.peek.err = syscall.Syscall6(syscall.SYS_RECVFROM, fd,
		uintptr(unsafe.Pointer(&c.peek.buf[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return true
}
