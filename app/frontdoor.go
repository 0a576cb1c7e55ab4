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

	"canaryd/config"
	"canaryd/metrics"
	"canaryd/overload"
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
		MaxReadFrameSize:              h.MaxReadFrameSize,
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
	ciphers, err := tlsfiles.CipherSuites(cfg.TLS.Ciphers)
	if err != nil {
		return fmt.Errorf("tls.ciphers: %w", err)
	}
	curves, err := tlsfiles.Curves(cfg.TLS.Curves)
	if err != nil {
		return fmt.Errorf("tls.curves: %w", err)
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
		CipherSuites:      ciphers,
		Curves:            curves,
		OCSP:              *cfg.TLS.OCSPStapling,
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
// then the connection limits (before TLS: a refusal costs no handshake),
// then TLS.
func (s *Server) frontListener(ln net.Listener) net.Listener {
	ln = proxy.Listener{Listener: ln, WriteTimeout: s.static.Server.ClientWriteTimeout.D()}
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
	limited := overload.NewListener(ln, s.overload.listenerOptions(s.trustedPeer))
	s.overload.ln.Store(limited)
	ln = limited
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

// tlsFiles lists the certificate, key and CA files to watch, sorted:
// the listener's and the pools'. On the reload goroutine (or before it).
func (s *Server) tlsFiles() []string {
	var fs []string
	if s.certs != nil {
		fs = append(fs, s.certs.Files()...)
	}
	fs = append(fs, s.pipe.poolTLSFiles()...)
	slices.Sort(fs)
	return slices.Compact(fs)
}

// tlsGrace is how long TLS files may fail to make a sound pair before it
// is an error: a rotation writes the certificate and the key one after
// the other (certbot, cert-manager, a deploy script), and between the two
// writes the pair does not match. Within it the problem is a WARN and the
// files are looked at again; past it, one ERROR.
const tlsGrace = time.Second

// reloadTLS re-reads every TLS file and swaps in what changed and is
// sound; what is broken keeps its previous material serving. A new
// problem is a WARN, and reloadTLS asks (true) for another look after
// tlsGrace; a problem still there then is one ERROR, counted, until the
// files are fixed. On the reload goroutine.
func (s *Server) reloadTLS(source string) (recheck bool) {
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
	poolProblems, poolApplied := s.pipe.reloadPoolTLS()
	problems = append(problems, poolProblems...)
	for _, key := range poolApplied {
		applied = true
		s.log.Info("upstream TLS files reloaded", zap.String("source", source), zap.String("pool_settings", key))
	}
	why := strings.Join(problems, "; ")
	now := time.Now()
	switch {
	case why == "":
		if applied || s.tlsProblem != "" {
			s.tlsMetrics.Reloaded(true)
		}
		if s.tlsProblem != "" || s.tlsPending != "" {
			s.log.Info("TLS files make sound pairs again", zap.String("source", source))
		}
		s.tlsProblem, s.tlsPending = "", ""
	case why == s.tlsProblem:
		s.tlsMetrics.Failing() // the same problem, already reported
	case why != s.tlsPending:
		// New: perhaps a rotation half done. Look again after the grace.
		s.tlsPending, s.tlsPendingSince = why, now
		s.log.Warn("TLS files changed but do not make a sound pair yet (a rotation writes the certificate and the key one after the other); the previous ones keep serving, looking again in "+tlsGrace.String(),
			zap.String("source", source), zap.String("error", why))
		return true
	case now.Sub(s.tlsPendingSince) < tlsGrace:
		return true
	default:
		s.tlsProblem, s.tlsPending = why, ""
		s.tlsMetrics.Reloaded(false)
		s.log.Error("TLS file reload failed; the previous certificates keep serving until the files are fixed",
			zap.String("source", source), zap.String("error", why), zap.Duration("failing_for", now.Sub(s.tlsPendingSince).Round(time.Millisecond)))
	}
	return false
}
