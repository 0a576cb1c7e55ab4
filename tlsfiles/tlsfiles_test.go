package tlsfiles

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"canaryd/internal/testcerts"
)

// handshake dials a real loopback TLS listener served with cfg and
// returns the leaf the client saw (and the handshake error).
func handshake(t *testing.T, cfg *tls.Config, client *tls.Config) (*tls.ConnectionState, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.(*tls.Conn).Handshake()
		c.Write([]byte("x")) // the client's read waits for the server's verdict (TLS 1.3)
		time.Sleep(50 * time.Millisecond)
		c.Close()
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), client)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return nil, err
	}
	cs := c.ConnectionState()
	return &cs, nil
}

func TestSNISelectsCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "test CA")
	c1, k1 := ca.WriteLeaf(t, dir, "default", "default.test")
	c2, k2 := ca.WriteLeaf(t, dir, "api", "api.example.test", "www.example.test")
	c3, k3 := ca.WriteLeaf(t, dir, "wild", "*.example.test")
	s, err := NewServer(ServerOptions{Pairs: []Pair{{c1, k1}, {c2, k2}, {c3, k3}}, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ sni, want string }{
		{"default.test", "default.test"},
		{"api.example.test", "api.example.test"}, // exact beats the wildcard
		{"WWW.Example.Test", "api.example.test"}, // names compare case-insensitively
		{"shop.example.test", "*.example.test"},
		{"a.b.example.test", "default.test"}, // a wildcard covers one label
		{"example.test", "default.test"},
		{"", "default.test"},
		{"other.test", "default.test"},
	} {
		t.Run(tc.sni, func(t *testing.T) {
			cs, err := handshake(t, s.Config(), &tls.Config{ServerName: tc.sni, RootCAs: ca.Pool, InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			if got := cs.PeerCertificates[0].Subject.CommonName; got != tc.want {
				t.Errorf("SNI %q served %q, want %q", tc.sni, got, tc.want)
			}
			if cs.NegotiatedProtocol != "h2" {
				t.Errorf("ALPN %q, want h2 (kept when SNI picks a certificate)", cs.NegotiatedProtocol)
			}
		})
	}
	if got := s.Certificates(); len(got) != 3 || got[0].Name != "default.test" || got[2].Name != "*.example.test" || got[0].NotAfter.Before(time.Now()) {
		t.Errorf("Certificates() = %+v", got)
	}
}

func TestReloadSwapsAndRefusesBrokenPairs(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "test CA")
	cf, kf := ca.WriteLeaf(t, dir, "site", "one.test")
	s, err := NewServer(ServerOptions{Pairs: []Pair{{cf, kf}}})
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		cs, err := handshake(t, s.Config(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		return cs.PeerCertificates[0].Subject.CommonName
	}
	if changed, err := s.Reload(); changed || err != nil {
		t.Fatalf("unchanged files: Reload() = %v, %v", changed, err)
	}
	// A new certificate with the old key: mismatched, refused.
	newCert, newKey := ca.Leaf(t, "two.test")
	testcerts.Write(t, cf, newCert)
	changed, err := s.Reload()
	if changed || err == nil || !strings.Contains(err.Error(), cf) || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched pair: Reload() = %v, %v; want an error naming %s", changed, err, cf)
	}
	if got := served(); got != "one.test" {
		t.Fatalf("after a refused reload the listener serves %q, want the old one.test", got)
	}
	// The key arrives: the pair is whole again and serves.
	testcerts.Write(t, kf, newKey)
	if changed, err := s.Reload(); !changed || err != nil {
		t.Fatalf("matching pair: Reload() = %v, %v", changed, err)
	}
	if got := served(); got != "two.test" {
		t.Fatalf("serves %q after the reload, want two.test", got)
	}
	// Garbage and a missing file are refused too.
	testcerts.Write(t, cf, []byte("not a certificate"))
	if _, err := s.Reload(); err == nil || !strings.Contains(err.Error(), cf) {
		t.Fatalf("garbage: %v", err)
	}
	os.Remove(kf)
	if _, err := s.Reload(); err == nil || !strings.Contains(err.Error(), kf) {
		t.Fatalf("missing key: %v", err)
	}
	if got := served(); got != "two.test" {
		t.Fatalf("serves %q, want two.test still", got)
	}
}

func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "client CA")
	other := testcerts.NewCA(t, "other CA")
	cf, kf := ca.WriteLeaf(t, dir, "srv", "srv.test")
	caFile := ca.WriteCA(t, dir, "ca")
	good, goodKey := ca.Leaf(t, "client-a")
	goodPair, _ := tls.X509KeyPair(good, goodKey)
	bad, badKey := other.Leaf(t, "client-b")
	badPair, _ := tls.X509KeyPair(bad, badKey)
	for _, require := range []bool{true, false} {
		s, err := NewServer(ServerOptions{Pairs: []Pair{{cf, kf}}, ClientCAFile: caFile, RequireClientCert: require})
		if err != nil {
			t.Fatal(err)
		}
		_, errNone := handshake(t, s.Config(), &tls.Config{InsecureSkipVerify: true})
		_, errGood := handshake(t, s.Config(), &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{goodPair}})
		// Sent whatever the server's list of acceptable CAs says (Go's
		// client would otherwise send none).
		_, errBad := handshake(t, s.Config(), &tls.Config{InsecureSkipVerify: true,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &badPair, nil }})
		if errGood != nil || errBad == nil || (errNone == nil) != !require {
			t.Errorf("require=%v: no cert: %v; good cert: %v; cert of another CA: %v", require, errNone, errGood, errBad)
		}
	}
	testcerts.Write(t, caFile, []byte("junk"))
	if _, err := NewServer(ServerOptions{Pairs: []Pair{{cf, kf}}, ClientCAFile: caFile}); err == nil || !strings.Contains(err.Error(), caFile) {
		t.Errorf("junk CA file: %v", err)
	}
}

func TestClientVerifiesAgainstCurrentRoots(t *testing.T) {
	dir := t.TempDir()
	ca1, ca2 := testcerts.NewCA(t, "one"), testcerts.NewCA(t, "two")
	caFile := ca1.WriteCA(t, dir, "roots")
	c, err := NewClient(ClientOptions{CAFile: caFile, ServerName: "inst.test"})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(ca *testcerts.CA, name string) *tls.Config {
		cp, kp := ca.Leaf(t, name)
		pair, _ := tls.X509KeyPair(cp, kp)
		return &tls.Config{Certificates: []tls.Certificate{pair}}
	}
	if _, err := handshake(t, serve(ca1, "inst.test"), c.Config()); err != nil {
		t.Fatalf("instance signed by the CA: %v", err)
	}
	if _, err := handshake(t, serve(ca1, "wrong.test"), c.Config()); err == nil {
		t.Fatal("a certificate for another name was accepted")
	}
	if _, err := handshake(t, serve(ca2, "inst.test"), c.Config()); err == nil {
		t.Fatal("a certificate of another CA was accepted")
	}
	testcerts.Write(t, caFile, ca2.PEM)
	if changed, err := c.Reload(); !changed || err != nil {
		t.Fatal(changed, err)
	}
	if _, err := handshake(t, serve(ca2, "inst.test"), c.Config()); err != nil {
		t.Fatalf("after the CA file changed: %v", err)
	}
	insecure, err := NewClient(ClientOptions{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, serve(ca2, "any.test"), insecure.Config()); err != nil {
		t.Fatalf("insecure_skip_verify: %v", err)
	}
	if _, err := NewClient(ClientOptions{CertFile: filepath.Join(dir, "x")}); err == nil {
		t.Fatal("cert_file without key_file accepted")
	}
}

func TestMinVersion(t *testing.T) {
	for s, want := range map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13} {
		if v, err := MinVersion(s); err != nil || v != want {
			t.Errorf("MinVersion(%q) = %v, %v", s, v, err)
		}
	}
	if _, err := MinVersion("1.1"); err == nil {
		t.Error("1.1 accepted")
	}
}
