package app

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"canaryd/balancer"
	"canaryd/config"
	"canaryd/metrics"
	"canaryd/proxy"
	"canaryd/proxyproto"
	"canaryd/tlsfiles"

	"go.uber.org/zap"
)

// setupFrontDoor gives the proxy server its protocols (HTTP/1.1; HTTP/2
// over TLS by ALPN, or h2c), their bounds, and its TLS material. Called by
// New, before anything listens.
func (s *Server) setupFrontDoor(cfg *config.Config) error {
	srv := s.proxy
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	h := cfg.Server.HTTP2
	srv.HTTP2 = &http.HTTP2Config{
		MaxConcurrentStreams:          h.MaxConcurrentStreams,
		MaxReceiveBufferPerStream:     h.MaxReceiveBufferPerStream,
		MaxReceiveBufferPerConnection: h.MaxReceiveBufferPerConnection,
		SendPingTimeout:               h.SendPingTimeout.D(),
		PingTimeout:                   h.PingTimeout.D(),
		WriteByteTimeout:              h.WriteByteTimeout.D(),
	}
	if cfg.Server.H2C {
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	if !cfg.TLS.Enabled() {
		return nil
	}
	min, err := tlsfiles.MinVersion(cfg.TLS.MinVersion)
	if err != nil {
		return err
	}
	var pairs []tlsfiles.Pair
	for _, p := range cfg.TLS.Pairs() {
		pairs = append(pairs, tlsfiles.Pair{CertFile: p.CertFile, KeyFile: p.KeyFile})
	}
	s.certs, err = tlsfiles.NewServer(tlsfiles.ServerOptions{
		Pairs: pairs, ClientCAFile: cfg.TLS.ClientCAFile,
		RequireClientCert: cfg.TLS.ClientAuth != config.ClientAuthVerifyIfGiven,
		MinVersion:        min,
		NextProtos:        []string{"h2", "http/1.1"},
	})
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	srv.Protocols.SetHTTP2(true)
	srv.TLSConfig = s.certs.Config()
	s.publishCerts()
	if cfg.TLS.RedirectHTTP != "" {
		s.redirect = &http.Server{
			Handler:           http.HandlerFunc(s.redirectToHTTPS),
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       30 * time.Second,
			MaxHeaderBytes:    cfg.Server.MaxHeaderBytes,
			ErrorLog:          srv.ErrorLog,
		}
	}
	return nil
}

// frontListener wraps the proxy's TCP listener: the syscall-saving conn,
// then the PROXY header (read before TLS: the balancer sends it first),
// then TLS.
func (s *Server) frontListener(ln net.Listener) net.Listener {
	ln = proxy.Listener{Listener: ln}
	if s.static.Server.ProxyProtocol {
		ln = &proxyproto.Listener{
			Listener: ln,
			Trusted:  s.trustedPeer,
			Timeout:  s.static.Server.ReadHeaderTimeout.D(),
			OnRefuse: func(peer net.Addr, err error) {
				s.tlsMetrics.ProxyRefused()
				if ce := s.log.Check(zap.DebugLevel, "connection refused for its PROXY header"); ce != nil {
					ce.Write(zap.Stringer("peer", peer), zap.Error(err))
				}
			},
		}
	}
	if s.certs != nil {
		ln = tls.NewListener(ln, s.proxy.TLSConfig)
	}
	return ln
}

func (s *Server) trustedPeer(a netip.Addr) bool {
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// redirectToHTTPS answers plain HTTP with a 308 to the same URL on the
// TLS listener's port (left out when it is 443).
func (s *Server) redirectToHTTPS(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		http.Error(w, "canaryd: a redirect to https needs a Host header", http.StatusBadRequest)
		return
	}
	_, port, _ := net.SplitHostPort(s.proxyLn.Addr().String())
	if port != "443" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	w.Header().Set("Location", "https://"+host+r.URL.RequestURI())
	w.WriteHeader(http.StatusPermanentRedirect)
}

// publishCerts exports the listener's certificates' expiry.
func (s *Server) publishCerts() {
	if s.certs == nil {
		return
	}
	var certs []metrics.TLSCert
	for _, c := range s.certs.Certificates() {
		certs = append(certs, metrics.TLSCert{Name: c.Name, NotAfter: c.NotAfter})
	}
	s.tlsMetrics.Serving(certs)
}

// poolConn is how a pool's instances are reached: a transport for its
// protocol and TLS, one for its probes, and the TLS files both read. Pools
// with the same settings share one, and a reload that keeps the settings
// keeps it (and its connections).
type poolConn struct {
	key   string
	proxy *proxy.Transport
	probe *proxy.Transport
	tls   *tlsfiles.Client // nil: no TLS files
}

// connFor returns p's poolConn, making it the first time; nil for a plain
// HTTP/1.1 pool without a tls block, which takes the default transport.
// applyMu held (or in New).
func (s *Server) connFor(p config.Pool) (*poolConn, error) {
	if p.Protocol == config.ProtocolHTTP1 && p.TLS == nil {
		return nil, nil
	}
	key := p.Protocol
	if p.TLS != nil {
		key += fmt.Sprintf(" %+v", *p.TLS)
	}
	if c := s.conns[key]; c != nil {
		return c, nil
	}
	up := s.static.Upstream
	o := proxy.TransportOptions{
		DialTimeout:            up.DialTimeout.D(),
		ResponseHeaderTimeout:  up.ResponseHeaderTimeout.D(),
		MaxIdleConnsPerHost:    up.MaxIdleConnsPerHost,
		IdleConnTimeout:        up.IdleConnTimeout.D(),
		InsecureSkipVerify:     up.InsecureSkipVerify,
		MaxResponseHeaderBytes: up.MaxResponseHeaderBytes,
		DisableFastPath:        !*up.FastPath,
		Protocol:               p.Protocol,
	}
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
	s.conns[key] = c
	return c, nil
}

// retireConns closes the idle connections of the pool transports the
// table just applied no longer uses (requests in flight on them finish).
// applyMu held.
func (s *Server) retireConns(specs []balancer.RouteSpec) {
	used := map[http.RoundTripper]bool{}
	for _, sp := range specs {
		for _, p := range sp.Pools {
			used[p.Transport] = true
		}
	}
	for k, c := range s.conns {
		if !used[c.proxy] {
			delete(s.conns, k)
			c.proxy.CloseIdleConnections()
			c.probe.CloseIdleConnections()
		}
	}
}

// transports lists every transport to instances: the default and each
// pool's. applyMu held.
func (s *Server) transports() []*proxy.Transport {
	ts := []*proxy.Transport{s.transport}
	for _, c := range s.conns {
		ts = append(ts, c.proxy, c.probe)
	}
	return ts
}

// tlsFiles lists the certificate, key and CA files to watch, sorted.
// applyMu held.
func (s *Server) tlsFiles() []string {
	var fs []string
	if s.certs != nil {
		fs = append(fs, s.certs.Files()...)
	}
	for _, c := range s.conns {
		if c.tls != nil {
			fs = append(fs, c.tls.Files()...)
		}
	}
	slices.Sort(fs)
	return slices.Compact(fs)
}

// reloadTLS re-reads every TLS file and swaps in what changed and is
// sound; what is broken keeps its previous material serving, with one
// error logged and counted per new problem. On the reload goroutine, with
// applyMu held.
func (s *Server) reloadTLS(source string) {
	var problems []string
	applied := false
	if s.certs != nil {
		changed, err := s.certs.Reload()
		switch {
		case err != nil:
			problems = append(problems, "listener: "+err.Error())
		case changed:
			applied = true
			s.publishCerts()
			s.log.Info("listener certificates reloaded", zap.String("source", source), zap.Any("certificates", s.certs.Certificates()))
		}
	}
	for _, c := range s.conns {
		if c.tls == nil {
			continue
		}
		changed, err := c.tls.Reload()
		switch {
		case err != nil:
			problems = append(problems, "upstream "+c.key+": "+err.Error())
		case changed:
			applied = true
			s.log.Info("upstream TLS files reloaded", zap.String("source", source), zap.String("pool_settings", c.key))
		}
	}
	why := strings.Join(problems, "; ")
	switch {
	case why != "" && why != s.tlsProblem:
		s.tlsMetrics.Reloaded(false)
		s.log.Error("TLS file reload failed; the previous certificates keep serving until the files are fixed",
			zap.String("source", source), zap.String("error", why))
	case why != "":
		s.tlsMetrics.Failing() // the same problem, already reported
	case applied || s.tlsProblem != "":
		s.tlsMetrics.Reloaded(true)
	}
	s.tlsProblem = why
}
