//go:build !(linux || darwin)

package h1

// peekState is empty where the socket cannot be peeked without waiting.
type peekState struct{}

func (c *conn) bind() {}

// stale reports what can be known without a socket peek: bytes already
// buffered. (canaryd's targets are Linux and macOS; elsewhere an idle
// connection's late bytes are found only when read.)
func (c *conn) stale() bool { return c.br.Buffered() > 0 }
