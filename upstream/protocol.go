package upstream

import "time"

// Protocol is how a pool's instances are spoken to: the config's
// pools[].protocol and the transport's, one type for both.
type Protocol string

// The protocols.
const (
	// HTTP1 is HTTP/1.1, over TLS to https:// instances. The default.
	HTTP1 Protocol = "http1"
	// H2 is HTTP/2 over TLS, negotiated by ALPN (h2 only: an instance that
	// does not negotiate it fails).
	H2 Protocol = "h2"
	// H2C is HTTP/2 without TLS, with prior knowledge (a gRPC server
	// without TLS).
	H2C Protocol = "h2c"
)

// Protocols lists them, in the order messages name them.
func Protocols() []Protocol { return []Protocol{HTTP1, H2, H2C} }

// The connection settings' defaults, in one place: the config's upstream
// block defaults to them, and the proxy's zero TransportOptions mean them.
const (
	// DefaultDialTimeout bounds connecting to an instance.
	DefaultDialTimeout = 2 * time.Second
	// DefaultResponseHeaderTimeout bounds the wait for an answer's head
	// once the request is written.
	DefaultResponseHeaderTimeout = 30 * time.Second
	// DefaultIdleConnTimeout closes idle connections.
	DefaultIdleConnTimeout = 90 * time.Second
	// DefaultMaxIdleConnsPerHost keeps idle keep-alive connections per
	// instance (Go's default of 2 churns connections under load).
	DefaultMaxIdleConnsPerHost = 256
	// DefaultMaxResponseHeaderBytes bounds each answer head an instance
	// sends: 64 KiB, about Envoy's default (60 KiB) and the same as the
	// listener's max_header_bytes. http.Transport's own default is 10 MiB.
	DefaultMaxResponseHeaderBytes = 64 << 10
)
