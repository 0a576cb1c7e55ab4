package app

import (
	"fmt"
	"net/http"

	"canaryd/config"
	"canaryd/proxy"
	"canaryd/tlsfiles"
	"canaryd/upstream"
)

// transportOptions is the upstream block as the proxy's transport
// options: the one place they are built (the default transport and every
// pool's start from it).
func transportOptions(up config.Upstream) proxy.TransportOptions {
	return proxy.TransportOptions{
		DialTimeout:            up.DialTimeout.D(),
		ResponseHeaderTimeout:  up.ResponseHeaderTimeout.D(),
		MaxIdleConnsPerHost:    up.MaxIdleConnsPerHost,
		IdleConnTimeout:        up.IdleConnTimeout.D(),
		InsecureSkipVerify:     up.InsecureSkipVerify,
		MaxResponseHeaderBytes: up.MaxResponseHeaderBytes,
		DisableFastPath:        !*up.FastPath,
	}
}

// poolConn is how a pool's instances are reached: a transport for its
// protocol and TLS, one for its probes, and the TLS files both read. Pools
// with the same settings share one, and a reload that keeps the settings
// keeps it (and its connections).
type poolConn struct {
	key   connKey
	proxy *proxy.Transport
	probe *proxy.Transport
	tls   *tlsfiles.Client // nil: no TLS files
}

// connKey is a pool's connection settings, comparable: pools with equal
// keys share a poolConn. Every field of config.UpstreamTLS is in it, so a
// new one cannot be left out.
type connKey struct {
	protocol upstream.Protocol
	hasTLS   bool
	tls      config.UpstreamTLS
}

func (k connKey) String() string {
	if !k.hasTLS {
		return string(k.protocol)
	}
	return fmt.Sprintf("%s %+v", k.protocol, k.tls)
}

// connForLocked returns p's poolConn, making it the first time; nil for a
// plain HTTP/1.1 pool without a tls block, which takes the default
// transport. p.mu held.
func (pl *pipeline) connForLocked(p config.Pool) (*poolConn, error) {
	if p.Protocol == upstream.HTTP1 && p.TLS == nil {
		return nil, nil
	}
	key := connKey{protocol: p.Protocol}
	if p.TLS != nil {
		key.hasTLS, key.tls = true, *p.TLS
	}
	if c := pl.conns[key]; c != nil {
		return c, nil
	}
	up := pl.static.Upstream
	o := transportOptions(up)
	o.Protocol = p.Protocol
	c := &poolConn{key: key}
	if t := p.TLS; t != nil {
		var err error
		c.tls, err = tlsfiles.NewClient(tlsfiles.ClientOptions{
			CAFile: t.CAFile, ServerName: t.ServerName, CertFile: t.CertFile, KeyFile: t.KeyFile,
			InsecureSkipVerify: t.InsecureSkipVerify || up.InsecureSkipVerify,
		})
		if err != nil {
			return nil, fmt.Errorf("pool %q tls: %w", p.Name, err)
		}
		o.TLS = c.tls.Config()
	}
	c.proxy = proxy.NewTransport(o)
	// Probes have their own connections: they never wait behind the
	// proxy's streams, nor hold one of its idle slots.
	o.MaxIdleConnsPerHost, o.DisableFastPath = 1, true
	c.probe = proxy.NewTransport(o)
	pl.conns[key] = c
	return c, nil
}

// retireConnsLocked closes the idle connections of the pool transports
// the live table no longer uses (requests in flight on them finish).
// p.mu held.
func (pl *pipeline) retireConnsLocked() {
	if len(pl.conns) == 0 {
		return
	}
	used := map[http.RoundTripper]bool{}
	for _, r := range pl.router.Load().Routes() {
		for _, p := range r.Pools {
			used[p.Transport] = true
		}
	}
	for k, c := range pl.conns {
		if !used[c.proxy] {
			delete(pl.conns, k)
			c.proxy.CloseIdleConnections()
			c.probe.CloseIdleConnections()
		}
	}
}

// transportsLocked lists every transport to instances: the default and
// each pool's. p.mu held.
func (pl *pipeline) transportsLocked() []*proxy.Transport {
	ts := []*proxy.Transport{pl.transport}
	for _, c := range pl.conns {
		ts = append(ts, c.proxy, c.probe)
	}
	return ts
}

// closeIdle closes every idle connection to instances (at shutdown).
func (pl *pipeline) closeIdle() {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, t := range pl.transportsLocked() {
		t.CloseIdleConnections()
	}
}

// poolTLS lists the pools' TLS files (what the watch follows).
func (pl *pipeline) poolTLSFiles() []string {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	var fs []string
	for _, c := range pl.conns {
		if c.tls != nil {
			fs = append(fs, c.tls.Files()...)
		}
	}
	return fs
}

// reloadPoolTLS re-reads the pools' TLS files; what changed and is sound
// applies, what is broken keeps its previous material. It returns the
// problems, and whether anything was applied.
func (pl *pipeline) reloadPoolTLS() (problems []string, applied []string) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, c := range pl.conns {
		if c.tls == nil {
			continue
		}
		changed, err := c.tls.Reload()
		switch {
		case err != nil:
			problems = append(problems, "upstream "+c.key.String()+": "+err.Error())
		case changed:
			applied = append(applied, c.key.String())
		}
	}
	return problems, applied
}
