//go:build linux || darwin

package h1

import (
	"syscall"
	"unsafe"
)

// peekState is the idle check's scratch space, kept on the connection so
// that the check allocates nothing.
type peekState struct {
	fd  uintptr // the socket; valid while the connection is open
	ok  bool    // fd was read
	buf [1]byte
}

// bind notes the socket's descriptor for stale. The connection owns it
// until it closes it, and stale runs only on a connection just taken from
// the pool (which no one else closes), so the number cannot have been
// reused for another file.
func (c *conn) bind() {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return // not a socket (a test's pipe): only buffered bytes are seen
	}
	if raw, err := sc.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { c.peek.fd, c.peek.ok = fd, true })
	}
}

// stale reports whether an idle connection has become readable: the
// instance sent something (a 408, a stray body, anything) or closed it. It
// asks the socket without waiting and without taking a byte (MSG_PEEK |
// MSG_DONTWAIT): one syscall, where http.Transport keeps a goroutine
// parked in a read on every idle connection to notice the same. The call
// never blocks, so it is a raw one: neither the scheduler's bookkeeping
// around a syscall that may block nor the poller's locks around a read
// (RawConn.Read), which were a quarter of the check's cost.
func (c *conn) stale() bool {
	if c.br.Buffered() > 0 {
		return true
	}
	if !c.peek.ok {
		return false
	}
	_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, c.peek.fd,
		uintptr(unsafe.Pointer(&c.peek.buf[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return e != syscall.EAGAIN
}
