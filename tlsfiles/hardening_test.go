package tlsfiles

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"canaryd/internal/testcerts"

	"golang.org/x/crypto/ocsp"
)

// serveTLS serves s's config on loopback: each connection gets "hi" and
// is closed once the client closes it.
func serveTLS(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := tls.NewListener(ln, s.Config())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.Write([]byte("hi"))
				io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() { tl.Close(); <-done })
	return ln.Addr().String()
}

// dialTLS dials addr with cfg, reads the greeting (which also takes in
// a TLS 1.3 session ticket) and returns the connection's state.
func dialTLS(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 2)
	if _, err := io.ReadFull(c, b); err != nil {
		return tls.ConnectionState{}, err
	}
	return c.ConnectionState(), nil
}

// twoKinds is a server with an ECDSA certificate (ec.test) and an RSA one
// (rsa.test), so that every TLS 1.2 suite has a certificate to try.
func twoKinds(t *testing.T, o ServerOptions) (*Server, *testcerts.CA) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "CA")
	ec, eck := ca.WriteLeaf(t, dir, "ec", "ec.test")
	rc, rk := ca.LeafWith(t, testcerts.LeafOptions{RSA: true}, "rsa.test")
	testcerts.Write(t, filepath.Join(dir, "rsa.crt"), rc)
	testcerts.Write(t, filepath.Join(dir, "rsa.key"), rk)
	o.Pairs = []Pair{{ec, eck}, {filepath.Join(dir, "rsa.crt"), filepath.Join(dir, "rsa.key")}}
	s, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	return s, ca
}

// Every TLS 1.2 suite Go implements is tried alone: the six ECDHE AEAD
// suites succeed, and every CBC, RC4, 3DES and RSA key exchange suite is
// refused, with the certificate it would need.
func TestOnlyAEADSuitesWithForwardSecrecy(t *testing.T) {
	s, ca := twoKinds(t, ServerOptions{})
	addr := serveTLS(t, s)
	tried := 0
	for _, c := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if !slices.Contains(c.SupportedVersions, tls.VersionTLS12) {
			continue
		}
		tried++
		name := "rsa.test"
		if strings.Contains(c.Name, "ECDSA") {
			name = "ec.test"
		}
		_, err := dialTLS(addr, &tls.Config{RootCAs: ca.Pool, ServerName: name, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{c.ID}})
		want := slices.Contains(DefaultCipherSuites(), c.ID)
		if (err == nil) != want {
			t.Errorf("%s: handshake err = %v; want success %v", c.Name, err, want)
		}
	}
	if tried < 20 {
		t.Fatalf("only %d TLS 1.2 suites tried", tried)
	}
	// TLS 1.3 as Go offers it.
	st, err := dialTLS(addr, &tls.Config{RootCAs: ca.Pool, ServerName: "ec.test"})
	if err != nil || st.Version != tls.VersionTLS13 {
		t.Fatalf("TLS 1.3: %v, version %x", err, st.Version)
	}
}

func TestCipherAndCurveSettings(t *testing.T) {
	ciphers, err := CipherSuites([]string{"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"})
	if err != nil {
		t.Fatal(err)
	}
	curves, err := Curves([]string{"P-384"})
	if err != nil {
		t.Fatal(err)
	}
	s, ca := twoKinds(t, ServerOptions{CipherSuites: ciphers, Curves: curves})
	addr := serveTLS(t, s)
	// Loosened: the one suite named is offered, the defaults are not.
	if _, err := dialTLS(addr, &tls.Config{RootCAs: ca.Pool, ServerName: "rsa.test", MaxVersion: tls.VersionTLS12, CipherSuites: ciphers}); err != nil {
		t.Fatalf("the suite tls.ciphers names: %v", err)
	}
	if _, err := dialTLS(addr, &tls.Config{RootCAs: ca.Pool, ServerName: "rsa.test", MaxVersion: tls.VersionTLS12, CipherSuites: DefaultCipherSuites()}); err == nil {
		t.Fatal("a default suite was offered although tls.ciphers names only one")
	}
	// Curves: only P-384.
	if _, err := dialTLS(addr, &tls.Config{RootCAs: ca.Pool, ServerName: "ec.test", CurvePreferences: []tls.CurveID{tls.X25519}}); err == nil {
		t.Fatal("X25519 accepted although tls.curves names only P-384")
	}
	if _, err := dialTLS(addr, &tls.Config{RootCAs: ca.Pool, ServerName: "ec.test", CurvePreferences: []tls.CurveID{tls.CurveP384}}); err != nil {
		t.Fatalf("P-384: %v", err)
	}
}

// A session resumes on another server that holds the same ticket keys
// (two members of a cluster), and after a rotation while the key that
// made its ticket still decrypts; not once that key is gone.
func TestSessionTicketKeys(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "CA")
	cert, key := ca.WriteLeaf(t, dir, "site", "site.test")
	newServer := func() *Server {
		s, err := NewServer(ServerOptions{Pairs: []Pair{{cert, key}}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := newServer(), newServer()
	k1, k2 := [32]byte{1}, [32]byte{2}
	a.SetTicketKeys([][32]byte{k1})
	b.SetTicketKeys([][32]byte{k1})
	addrA, addrB := serveTLS(t, a), serveTLS(t, b)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(fmt.Sprintf("tls %x", version), func(t *testing.T) {
			a.SetTicketKeys([][32]byte{k1})
			b.SetTicketKeys([][32]byte{k1})
			client := func() *tls.Config {
				return &tls.Config{RootCAs: ca.Pool, ServerName: "site.test", MaxVersion: version, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			}
			cfg := client()
			if st, err := dialTLS(addrA, cfg); err != nil || st.DidResume {
				t.Fatalf("first handshake: %v, resumed %v", err, st.DidResume)
			}
			if st, err := dialTLS(addrB, cfg); err != nil || !st.DidResume {
				t.Fatalf("on the other server with the same keys: %v, resumed %v; want a resumption", err, st.DidResume)
			}
			// Rotated: k2 encrypts, k1 still decrypts.
			cfg = client()
			dialTLS(addrA, cfg)
			b.SetTicketKeys([][32]byte{k2, k1})
			if st, err := dialTLS(addrB, cfg); err != nil || !st.DidResume {
				t.Fatalf("after a rotation that keeps the old key: %v, resumed %v", err, st.DidResume)
			}
			cfg = client()
			dialTLS(addrA, cfg)
			b.SetTicketKeys([][32]byte{k2})
			if st, err := dialTLS(addrB, cfg); err != nil || st.DidResume {
				t.Fatalf("once the ticket's key is gone: %v, resumed %v; want a full handshake", err, st.DidResume)
			}
		})
	}
}

// ocspResponder is the CA's OCSP responder: openssl ocsp answering from
// an index in openssl ca's format. OpenSSL 3.0's own -port binds every
// interface, so a loopback HTTP server hands each request to one run of
// openssl ocsp (-reqin, -respout): openssl makes and signs every answer.
func ocspResponder(t *testing.T, ca *testcerts.CA, dir, index string) string {
	t.Helper()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CANARYD_REQUIRE_OPENSSL") != "" {
			t.Fatal("openssl not found and CANARYD_REQUIRE_OPENSSL is set")
		}
		t.Skip("openssl not found")
	}
	caFile := ca.WriteCA(t, dir, "ocsp-ca")
	keyFile := filepath.Join(dir, "ocsp-ca.key")
	testcerts.Write(t, keyFile, ca.KeyPEM(t))
	idx := filepath.Join(dir, "index.txt")
	testcerts.Write(t, idx, []byte(index))
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		req, resp := filepath.Join(dir, "req.der"), filepath.Join(dir, "resp.der")
		testcerts.Write(t, req, body)
		out, err := exec.Command(openssl, "ocsp", "-index", idx, "-reqin", req, "-respout", resp,
			"-rsigner", caFile, "-rkey", keyFile, "-CA", caFile, "-nmin", "5").CombinedOutput()
		if err != nil {
			t.Errorf("openssl ocsp: %v: %s", err, out)
			http.Error(w, "responder failed", 500)
			return
		}
		der, _ := os.ReadFile(resp)
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(der)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// indexLine is a line of openssl ca's index for a certificate: V (valid)
// or R (revoked).
func indexLine(status string, serial *big.Int, notAfter time.Time) string {
	revoked := ""
	if status == "R" {
		revoked = time.Now().Add(-time.Minute).UTC().Format("060102150405Z")
	}
	hex := strings.ToUpper(serial.Text(16))
	if len(hex)%2 == 1 {
		hex = "0" + hex
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s\tunknown\t/CN=site.test\n", status, notAfter.UTC().Format("060102150405Z"), revoked, hex)
}

func TestOCSPStaplingWithARealResponder(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status string
		staple bool
	}{
		{"good", "V", true},
		{"revoked", "R", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ca := testcerts.NewCA(t, "CA")
			serial := big.NewInt(time.Now().UnixNano())
			notAfter := time.Now().Add(24 * time.Hour)
			// The responder's port is known only once it runs; the
			// index it reads is written first.
			url := ocspResponder(t, ca, dir, indexLine(tc.status, serial, notAfter))
			certPEM, keyPEM := ca.LeafWith(t, testcerts.LeafOptions{OCSPServer: url, Serial: serial, NotAfter: notAfter}, "site.test")
			cert, key := filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key")
			testcerts.Write(t, cert, append(certPEM, ca.PEM...)) // the chain: the issuer after the leaf
			testcerts.Write(t, key, keyPEM)
			s, err := NewServer(ServerOptions{Pairs: []Pair{{cert, key}}, OCSP: true})
			if err != nil {
				t.Fatal(err)
			}
			addr := serveTLS(t, s)
			// Before any fetch the handshake goes on, without a staple.
			if st, err := dialTLS(addr, &tls.Config{RootCAs: ca.Pool, ServerName: "site.test"}); err != nil || len(st.OCSPResponse) != 0 {
				t.Fatalf("before the fetch: %v, staple of %d bytes", err, len(st.OCSPResponse))
			}
			ctx, cancel := context.WithCancel(context.Background())
			events := make(chan OCSPEvent, 16)
			done := make(chan struct{})
			go func() { defer close(done); s.RunOCSP(ctx, nil, func(ev OCSPEvent) { events <- ev }) }()
			defer func() { cancel(); <-done }()
			var ev OCSPEvent
			select {
			case ev = <-events:
			case <-time.After(15 * time.Second):
				t.Fatal("no OCSP fetch in 15s")
			}
			st, err := dialTLS(addr, &tls.Config{RootCAs: ca.Pool, ServerName: "site.test"})
			if err != nil {
				t.Fatal(err)
			}
			if !tc.staple {
				if ev.Err == nil || !strings.Contains(ev.Err.Error(), "revoked") || len(st.OCSPResponse) != 0 {
					t.Fatalf("a revoked certificate: event %+v, staple of %d bytes; want an error naming it revoked and no staple", ev, len(st.OCSPResponse))
				}
				return
			}
			if ev.Err != nil {
				t.Fatalf("fetch: %v", ev.Err)
			}
			resp, err := ocsp.ParseResponseForCert(st.OCSPResponse, st.PeerCertificates[0], ca.Cert)
			if err != nil || resp.Status != ocsp.Good {
				t.Fatalf("stapled response: %v, status %d", err, resp.Status)
			}
			// Refreshed halfway to NextUpdate (-nmin 5: in 2.5 minutes).
			if half := resp.ThisUpdate.Add(resp.NextUpdate.Sub(resp.ThisUpdate) / 2); !ev.Next.Equal(half) {
				t.Fatalf("next fetch at %v; want halfway, %v", ev.Next, half)
			}
		})
	}
}

// A responder that is down delays no handshake, and is retried.
func TestOCSPResponderDown(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "CA")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	url := "http://" + ln.Addr().String()
	ln.Close()
	certPEM, keyPEM := ca.LeafWith(t, testcerts.LeafOptions{OCSPServer: url}, "site.test")
	cert, key := filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key")
	testcerts.Write(t, cert, append(certPEM, ca.PEM...))
	testcerts.Write(t, key, keyPEM)
	s, err := NewServer(ServerOptions{Pairs: []Pair{{cert, key}}, OCSP: true})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan OCSPEvent, 16)
	done := make(chan struct{})
	go func() { defer close(done); s.RunOCSP(ctx, nil, func(ev OCSPEvent) { events <- ev }) }()
	defer func() { cancel(); <-done }()
	for i := range 2 {
		select {
		case ev := <-events:
			if ev.Err == nil {
				t.Fatal("a fetch from a dead responder succeeded")
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("fetch %d not retried in 15s", i+1)
		}
		start := time.Now()
		if _, err := dialTLS(addr, &tls.Config{RootCAs: ca.Pool, ServerName: "site.test"}); err != nil || time.Since(start) > 2*time.Second {
			t.Fatalf("handshake while the responder is down: %v after %v", err, time.Since(start))
		}
	}
}
