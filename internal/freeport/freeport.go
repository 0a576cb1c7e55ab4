// Package freeport hands tests free TCP addresses on a loopback address,
// never the same one twice in a test binary: the kernel hands a port it
// has just seen closed out again, and two listeners told the same
// address make a test fail for nothing.
package freeport

import (
	"net"
	"sync"
	"testing"
)

// handedOut holds every address handed out in this process. It is
// process-wide by nature: the ports are.
var handedOut sync.Map

// On is a free port on ip, as "ip:port".
func On(t testing.TB, ip string) string {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if _, dup := handedOut.LoadOrStore(addr, true); !dup {
			return addr
		}
	}
	t.Fatal("no fresh port in 100 tries on " + ip)
	return ""
}
