// Package tlsfiles keeps TLS material that lives in files (the listener's
// certificates, chosen by SNI, and its client CA; a pool's CA and client
// certificate) and swaps it atomically when the files change. Handshakes
// read the current set through one atomic pointer, so a reload never holds
// up a handshake, and connections already open keep what they negotiated.
// A new set that is broken or mismatched is refused whole: the old one
// keeps serving.
package tlsfiles

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Pair is a certificate file (PEM, the leaf first, then its chain) and its
// private key file.
type Pair struct{ CertFile, KeyFile string }

// Cert describes one loaded certificate, for metrics and logs.
type Cert struct {
	// Name is the certificate's first DNS name, else its common name,
	// else its file's name.
	Name     string
	File     string
	NotAfter time.Time
}

// ServerOptions describe a listener's TLS. Zero values take the defaults
// given on each field.
type ServerOptions struct {
	// Pairs are the certificates; the first is the default, served when
	// the client's server name (SNI) matches no certificate's names. At
	// least one.
	Pairs []Pair
	// ClientCAFile, when set, asks clients for a certificate signed by one
	// of its CAs. Default "": none asked for.
	ClientCAFile string
	// RequireClientCert refuses a client without a certificate; false
	// verifies one only if given. Ignored without ClientCAFile.
	RequireClientCert bool
	// MinVersion is the lowest TLS version. Default TLS 1.2.
	MinVersion uint16
	// NextProtos are the ALPN protocols, in preference order. Default
	// none (HTTP/1.1 only).
	NextProtos []string
	// CipherSuites are TLS 1.2's suites. Default DefaultCipherSuites.
	CipherSuites []uint16
	// Curves are the key exchange groups. Default nil: Go's.
	Curves []tls.CurveID
	// OCSP staples OCSP responses (RunOCSP fetches them). Default false.
	OCSP bool
}

// Server is a listener's TLS material.
type Server struct {
	opts ServerOptions
	cur  atomic.Pointer[serverSet]
	// config is the one tls.Config listened with: its session ticket keys
	// are the ones every handshake uses (SetTicketKeys).
	config *tls.Config
	// kick wakes RunOCSP after a reload brought new certificates.
	kick chan struct{}
}

type serverSet struct {
	hash   string
	certs  []*served
	info   []Cert
	exact  map[string]*served
	wild   map[string]*served // "example.com" for *.example.com
	config *tls.Config
}

// served is a certificate, and the same with an OCSP staple once one is
// fetched: handshakes read the stapled copy through one atomic pointer,
// so a refresh never races a handshake.
type served struct {
	base    *tls.Certificate
	stapled atomic.Pointer[tls.Certificate]
	// Owned by RunOCSP's goroutine: when to fetch again, and how long to
	// wait after a failure.
	refreshAt time.Time
	backoff   time.Duration
}

func (c *served) cert() *tls.Certificate {
	if s := c.stapled.Load(); s != nil {
		return s
	}
	return c.base
}

// NewServer loads o's files; an error names the file that failed.
func NewServer(o ServerOptions) (*Server, error) {
	if len(o.Pairs) == 0 {
		return nil, errors.New("tls: no certificate; set tls.cert_file and tls.key_file")
	}
	if o.MinVersion == 0 {
		o.MinVersion = tls.VersionTLS12
	}
	if len(o.CipherSuites) == 0 {
		o.CipherSuites = DefaultCipherSuites()
	}
	s := &Server{opts: o, kick: make(chan struct{}, 1)}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	s.config = &tls.Config{
		MinVersion:       o.MinVersion,
		NextProtos:       o.NextProtos,
		CipherSuites:     o.CipherSuites,
		CurvePreferences: o.Curves,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load().config, nil
		},
	}
	return s, nil
}

// Files lists every file the material is read from.
func (s *Server) Files() []string {
	var fs []string
	for _, p := range s.opts.Pairs {
		fs = append(fs, p.CertFile, p.KeyFile)
	}
	if s.opts.ClientCAFile != "" {
		fs = append(fs, s.opts.ClientCAFile)
	}
	return fs
}

// Reload reads the files again. When their content changed and all of it
// is sound, the new set serves the next handshake and changed is true.
// When anything is wrong, err says what and the old set keeps serving.
func (s *Server) Reload() (changed bool, err error) {
	contents, hash, err := readAll(s.Files())
	if err != nil {
		return false, err
	}
	if old := s.cur.Load(); old != nil && old.hash == hash {
		return false, nil
	}
	set := &serverSet{hash: hash, exact: map[string]*served{}, wild: map[string]*served{}}
	for i, p := range s.opts.Pairs {
		tc, info, err := pair(p, contents[2*i], contents[2*i+1])
		if err != nil {
			return false, err
		}
		c := &served{base: tc}
		set.certs = append(set.certs, c)
		set.info = append(set.info, info)
		// The first certificate listed for a name wins, as the order says.
		for _, n := range tc.Leaf.DNSNames {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			m, key := set.exact, n
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				m, key = set.wild, rest
			}
			if _, dup := m[key]; !dup {
				m[key] = c
			}
		}
	}
	cfg := &tls.Config{
		MinVersion:       s.opts.MinVersion,
		NextProtos:       s.opts.NextProtos,
		CipherSuites:     s.opts.CipherSuites,
		CurvePreferences: s.opts.Curves,
		GetCertificate:   set.pick,
	}
	if s.opts.ClientCAFile != "" {
		pool, err := caPool(s.opts.ClientCAFile, contents[len(contents)-1])
		if err != nil {
			return false, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if s.opts.RequireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	set.config = cfg
	s.cur.Store(set)
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return true, nil
}

// Config is the tls.Config to listen with (always the same one). Each
// handshake takes the set current at its start (GetConfigForClient); the
// session ticket keys stay this Config's, so resumption survives reloads.
func (s *Server) Config() *tls.Config { return s.config }

// SetTicketKeys sets the session ticket keys: the first encrypts new
// tickets, all of them decrypt. Safe during handshakes.
func (s *Server) SetTicketKeys(keys [][32]byte) { s.config.SetSessionTicketKeys(keys) }

// Certificates describes the certificates served now, the default first.
func (s *Server) Certificates() []Cert { return append([]Cert(nil), s.cur.Load().info...) }

// pick chooses by SNI: an exact name, then a wildcard one label deep,
// then the default (the first pair).
func (set *serverSet) pick(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if name != "" {
		if c := set.exact[name]; c != nil {
			return c.cert(), nil
		}
		if _, parent, ok := strings.Cut(name, "."); ok {
			if c := set.wild[parent]; c != nil {
				return c.cert(), nil
			}
		}
	}
	return set.certs[0].cert(), nil
}

// ClientOptions describe how a pool's instances are reached over TLS.
type ClientOptions struct {
	// CAFile holds the CAs that sign the instances' certificates. Default
	// "": the system's roots.
	CAFile string
	// ServerName is the name verified in (and sent as SNI to) each
	// instance. Default "": the instance's host.
	ServerName string
	// CertFile and KeyFile are the client certificate presented to
	// instances that ask for one (mutual TLS). Default: none.
	CertFile, KeyFile string
	// InsecureSkipVerify accepts any certificate. Default false.
	InsecureSkipVerify bool
	// NextProtos are the ALPN protocols offered. Default none.
	NextProtos []string
}

// Client is a pool's upstream TLS material.
type Client struct {
	opts ClientOptions
	cur  atomic.Pointer[clientSet]
}

type clientSet struct {
	hash  string
	roots *x509.CertPool // nil: the system's
	cert  *tls.Certificate
}

// NewClient loads o's files; an error names the file that failed.
func NewClient(o ClientOptions) (*Client, error) {
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("tls: cert_file and key_file go together; set both or neither")
	}
	c := &Client{opts: o}
	if _, err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Files lists every file the material is read from.
func (c *Client) Files() []string {
	var fs []string
	if c.opts.CAFile != "" {
		fs = append(fs, c.opts.CAFile)
	}
	if c.opts.CertFile != "" {
		fs = append(fs, c.opts.CertFile, c.opts.KeyFile)
	}
	return fs
}

// Reload is as Server.Reload.
func (c *Client) Reload() (changed bool, err error) {
	contents, hash, err := readAll(c.Files())
	if err != nil {
		return false, err
	}
	if old := c.cur.Load(); old != nil && old.hash == hash {
		return false, nil
	}
	set := &clientSet{hash: hash}
	i := 0
	if c.opts.CAFile != "" {
		if set.roots, err = caPool(c.opts.CAFile, contents[0]); err != nil {
			return false, err
		}
		i = 1
	}
	if c.opts.CertFile != "" {
		cert, _, err := pair(Pair{c.opts.CertFile, c.opts.KeyFile}, contents[i], contents[i+1])
		if err != nil {
			return false, err
		}
		set.cert = cert
	}
	c.cur.Store(set)
	return true, nil
}

// Config is the tls.Config to dial instances with. Verification is done
// by VerifyConnection against the roots current at the handshake, so that
// a new CA file applies without a new transport; the name checked is the
// one the handshake used (ServerName, else the instance's host).
func (c *Client) Config() *tls.Config {
	return &tls.Config{
		ServerName: c.opts.ServerName,
		NextProtos: c.opts.NextProtos,
		MinVersion: tls.VersionTLS12,
		// Verified below, against the current roots.
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection verifies
		VerifyConnection:   c.verify,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert := c.cur.Load().cert; cert != nil {
				return cert, nil
			}
			return &tls.Certificate{}, nil // none: the server decides
		},
	}
}

func (c *Client) verify(cs tls.ConnectionState) error {
	if c.opts.InsecureSkipVerify {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the instance sent no certificate")
	}
	opts := x509.VerifyOptions{Roots: c.cur.Load().roots, DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
	for _, ic := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(ic)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
}

// readAll reads files whole and hashes them together.
func readAll(files []string) ([][]byte, string, error) {
	h := sha256.New()
	out := make([][]byte, len(files))
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, "", fmt.Errorf("read %w", err)
		}
		out[i] = b
		fmt.Fprintf(h, "%d:%d:", i, len(b))
		h.Write(b)
	}
	return out, hex.EncodeToString(h.Sum(nil)), nil
}

func pair(p Pair, certPEM, keyPEM []byte) (*tls.Certificate, Cert, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, Cert{}, fmt.Errorf("certificate %s with key %s: %w; fix the pair", p.CertFile, p.KeyFile, err)
	}
	// X509KeyPair has parsed the leaf (Go 1.23+); keep it for SNI and expiry.
	leaf := c.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, Cert{}, fmt.Errorf("certificate %s: %w", p.CertFile, err)
		}
		c.Leaf = leaf
	}
	name := filepath.Base(p.CertFile)
	switch {
	case len(leaf.DNSNames) > 0:
		name = leaf.DNSNames[0]
	case leaf.Subject.CommonName != "":
		name = leaf.Subject.CommonName
	}
	return &c, Cert{Name: name, File: p.CertFile, NotAfter: leaf.NotAfter}, nil
}

func caPool(file string, data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA file %s: certificate %d: %w", file, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate; put the CA's certificate(s) in it", file)
	}
	return pool, nil
}

// MinVersion reads "1.2" or "1.3".
func MinVersion(s string) (uint16, error) {
	switch s {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("%q is not a TLS version canaryd accepts; use 1.2 or 1.3", s)
}

// DefaultCipherSuites are the TLS 1.2 suites offered by default: ECDHE
// key exchange (forward secrecy) with an AEAD cipher. Go's own defaults
// add ECDHE suites with AES-CBC and SHA-1 (the LUCKY13 class of attacks
// targets them); Caddy, Mozilla's "intermediate" profile and this list
// leave them out. A new slice at every call.
func DefaultCipherSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// CipherSuites reads tls.ciphers: Go's names of TLS 1.2 suites. The
// insecure ones (CBC, RSA key exchange) are accepted when named, since
// the operator asked for them; TLS 1.3 suites are refused, as they are
// not configurable.
func CipherSuites(names []string) ([]uint16, error) {
	if len(names) == 0 {
		return DefaultCipherSuites(), nil
	}
	known := map[string]*tls.CipherSuite{}
	for _, c := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		known[c.Name] = c
	}
	var out []uint16
	for _, n := range names {
		c := known[n]
		switch {
		case c == nil:
			return nil, fmt.Errorf("%q is not a cipher suite Go knows; use names such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", n)
		case slices.Equal(c.SupportedVersions, []uint16{tls.VersionTLS13}):
			return nil, fmt.Errorf("%s is a TLS 1.3 suite, and those are not configurable (Go offers all three); list TLS 1.2 suites only", n)
		}
		out = append(out, c.ID)
	}
	return out, nil
}

// Curves reads tls.curves: X25519MLKEM768, X25519, P-256, P-384, P-521.
// None: nil, Go's defaults.
func Curves(names []string) ([]tls.CurveID, error) {
	known := map[string]tls.CurveID{
		"X25519MLKEM768": tls.X25519MLKEM768, "X25519": tls.X25519,
		"P-256": tls.CurveP256, "P-384": tls.CurveP384, "P-521": tls.CurveP521,
	}
	var out []tls.CurveID
	for _, n := range names {
		id, ok := known[n]
		if !ok {
			return nil, fmt.Errorf("%q is not a curve; use X25519MLKEM768, X25519, P-256, P-384 or P-521", n)
		}
		out = append(out, id)
	}
	return out, nil
}
