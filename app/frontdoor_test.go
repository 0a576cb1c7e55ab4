package app

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/internal/testcerts"
)

// protoBackend answers with the protocol it was spoken to and the client
// address it was told of.
func protoBackend(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s xff=%s", r.Proto, r.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(s.Close)
	return s
}

// startFileRig writes cfg to a file and serves it, reloads on.
func startFileRig(t *testing.T, dir, cfg string) *rig {
	t.Helper()
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, cfg)
	return startRig(t, path)
}

// tlsClient trusts ca and speaks the given ALPN protocols; each request
// may force a new connection (and handshake) with fresh.
func tlsClient(ca *x509.CertPool, serverName string, h2, fresh bool) (*http.Client, *http.Transport) {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: ca, ServerName: serverName},
		ForceAttemptHTTP2: h2,
		DisableKeepAlives: fresh,
	}
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, tr
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// tlsRig serves one route to backend on a TLS listener with a certificate
// for site.test (signed by the CA it returns); top is more top-level YAML,
// tlsExtra more keys of the tls block.
func tlsRig(t *testing.T, backend, top, tlsExtra string) (*rig, *testcerts.CA) {
	t.Helper()
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "CA")
	cf, kf := ca.WriteLeaf(t, dir, "site", "site.test")
	return startFileRig(t, dir, fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
%s
tls: { cert_file: %s, key_file: %s %s }
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["%s"] }]
`, top, cf, kf, tlsExtra, backend)), ca
}

// TLS on the listener: SNI picks the certificate (exact and wildcard
// names, the first one as default), ALPN offers h2 whichever certificate
// SNI chose, HTTP/1.1 clients still work, and each served certificate's
// expiry is exported.
func TestTLSListenerSNIAndALPN(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "canaryd test CA")
	c1, k1 := ca.WriteLeaf(t, dir, "default", "default.test")
	c2, k2 := ca.WriteLeaf(t, dir, "api", "api.test")
	c3, k3 := ca.WriteLeaf(t, dir, "wild", "*.shop.test")
	be := protoBackend(t)
	r := startFileRig(t, dir, fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
tls:
  cert_file: %s
  key_file: %s
  certificates: [{cert_file: %s, key_file: %s}, {cert_file: %s, key_file: %s}]
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["%s"] }]
`, c1, k1, c2, k2, c3, k3, be.URL))
	url := "https://" + r.srv.ProxyAddr().String() + "/"
	for _, tc := range []struct {
		sni, want string
		h2        bool
	}{
		{"default.test", "default.test", true},
		{"api.test", "api.test", true},
		{"api.test", "api.test", false},
		{"a.shop.test", "*.shop.test", true},
		{"unknown.test", "default.test", true},
	} {
		c, tr := tlsClient(ca.Pool, tc.sni, tc.h2, false)
		if tc.want != tc.sni {
			// The default certificate does not name the SNI: accept it for
			// what it is, to see which one came.
			tr.TLSClientConfig.InsecureSkipVerify = true
		}
		resp, body := get(t, c, url)
		tr.CloseIdleConnections()
		wantProto := "HTTP/1.1"
		if tc.h2 {
			wantProto = "HTTP/2.0"
		}
		if resp.StatusCode != 200 || resp.Proto != wantProto || !strings.HasPrefix(body, "HTTP/1.1") {
			t.Errorf("SNI %s h2=%v: %d %s, backend saw %q; want 200 over %s, HTTP/1.1 to the instance", tc.sni, tc.h2, resp.StatusCode, resp.Proto, body, wantProto)
		}
		if got := resp.TLS.PeerCertificates[0].Subject.CommonName; got != tc.want {
			t.Errorf("SNI %s: certificate %s, want %s", tc.sni, got, tc.want)
		}
	}
	mf := scrape(t, r.admin)["canaryd_tls_certificate_expiry_timestamp_seconds"]
	got := series(mf, "name")
	if len(got) != 3 || got["default.test"] < float64(time.Now().Unix()) || got["*.shop.test"] == 0 {
		t.Errorf("expiry series: %v", got)
	}
}

// The certificate is rotated under load, by a Kubernetes-Secret symlink
// swap, by rename and by writing the files in place (the key, then the
// certificate: a moment of mismatch in between): no request fails, and the new certificate is served
// within 2 s. A broken new pair keeps the old one serving and sets the
// reload-failure metrics; fixing it is picked up again.
func TestCertificateRotationUnderLoad(t *testing.T) {
	for _, how := range []string{"symlink swap", "rename", "in-place write"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			ca := testcerts.NewCA(t, "CA")
			// Kubernetes mounts a Secret as tls.crt -> ..data/tls.crt, with
			// ..data a symlink to a timestamped directory swapped whole.
			certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
			generation := 0
			install := func(cert, key []byte) {
				generation++
				switch how {
				case "symlink swap":
					gen := filepath.Join(dir, fmt.Sprintf("..gen%d", generation))
					os.Mkdir(gen, 0o755)
					testcerts.Write(t, filepath.Join(gen, "tls.crt"), cert)
					testcerts.Write(t, filepath.Join(gen, "tls.key"), key)
					tmp := filepath.Join(dir, "..data_tmp")
					os.Remove(tmp)
					if err := os.Symlink(filepath.Base(gen), tmp); err != nil {
						t.Fatal(err)
					}
					if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
						t.Fatal(err)
					}
					if generation == 1 {
						os.Symlink("..data/tls.crt", certPath)
						os.Symlink("..data/tls.key", keyPath)
					}
				case "in-place write":
					testcerts.Write(t, keyPath, key)
					time.Sleep(20 * time.Millisecond)
					testcerts.Write(t, certPath, cert)
				case "rename":
					for path, data := range map[string][]byte{keyPath: key, certPath: cert} {
						tmp := path + ".tmp"
						testcerts.Write(t, tmp, data)
						if err := os.Rename(tmp, path); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			cert1, key1 := ca.Leaf(t, "site.test")
			install(cert1, key1)
			be := protoBackend(t)
			r := startFileRig(t, dir, fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
reload: { debounce: 50ms }
tls: { cert_file: %s, key_file: %s }
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["%s"] }]
`, certPath, keyPath, be.URL))
			url := "https://" + r.srv.ProxyAddr().String() + "/"
			serial := func() string {
				c, tr := tlsClient(ca.Pool, "site.test", true, true)
				defer tr.CloseIdleConnections()
				resp, _ := get(t, c, url)
				return resp.TLS.PeerCertificates[0].SerialNumber.String()
			}
			first := serial()

			// Load: new connections (full handshakes) and keep-alive ones.
			stop := make(chan struct{})
			var ok, bad atomic.Int64
			var firstErr atomic.Value
			var wg sync.WaitGroup
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func(fresh bool) {
					defer wg.Done()
					c, tr := tlsClient(ca.Pool, "site.test", !fresh, fresh)
					defer tr.CloseIdleConnections()
					for {
						select {
						case <-stop:
							return
						default:
						}
						resp, err := c.Get(url)
						if err == nil {
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
						}
						if err != nil || resp.StatusCode != 200 {
							bad.Add(1)
							firstErr.CompareAndSwap(nil, fmt.Sprint(err))
							continue
						}
						ok.Add(1)
					}
				}(i%2 == 0)
			}
			time.Sleep(200 * time.Millisecond)
			cert2, key2 := ca.Leaf(t, "site.test")
			install(cert2, key2)
			start := time.Now()
			for serial() == first {
				if time.Since(start) > 2*time.Second {
					t.Fatalf("the new certificate was not served within 2s")
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("%s: new certificate served after %v", how, time.Since(start).Round(time.Millisecond))
			second := serial()

			// A broken pair: the new certificate with the old key.
			cert3, _ := ca.Leaf(t, "site.test")
			install(cert3, key2)
			for end := time.Now().Add(3 * time.Second); r.gauge("canaryd_tls_last_reload_successful") != 0; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(end) {
					t.Fatal("a mismatched pair did not set canaryd_tls_last_reload_successful to 0")
				}
			}
			if got := serial(); got != second {
				t.Fatalf("after a broken reload the listener serves %s, want the previous %s", got, second)
			}
			if f := series(scrape(t, r.admin)["canaryd_tls_reloads_total"], "result"); f["failed"] < 1 || f["applied"] < 1 {
				t.Errorf("canaryd_tls_reloads_total = %v", f)
			}
			time.Sleep(200 * time.Millisecond)
			close(stop)
			wg.Wait()
			if bad.Load() != 0 || ok.Load() < 20 {
				t.Fatalf("under rotation: %d ok, %d failed (first: %v)", ok.Load(), bad.Load(), firstErr.Load())
			}
			t.Logf("%d requests during the rotations, none failed", ok.Load())
			cert4, key4 := ca.Leaf(t, "site.test")
			install(cert4, key4)
			for end := time.Now().Add(3 * time.Second); r.gauge("canaryd_tls_last_reload_successful") != 1; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(end) {
					t.Fatal("a fixed pair was not picked up")
				}
			}
			if serial() == second {
				t.Fatal("the fixed pair is not served")
			}
		})
	}
}

// mTLS: with tls.client_ca_file (client_auth require) a client without a
// certificate, or with one of another CA, gets no answer; one with a
// certificate of the CA gets through.
func TestMutualTLS(t *testing.T) {
	clientCA, other := testcerts.NewCA(t, "client CA"), testcerts.NewCA(t, "other CA")
	r, ca := tlsRig(t, protoBackend(t).URL, "", ", client_ca_file: "+clientCA.WriteCA(t, t.TempDir(), "clients"))
	url := "https://" + r.srv.ProxyAddr().String() + "/"
	try := func(cert *tls.Certificate) error {
		c, tr := tlsClient(ca.Pool, "site.test", false, true)
		if cert != nil {
			tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		return err
	}
	good, goodKey := clientCA.Leaf(t, "client-1")
	goodPair, _ := tls.X509KeyPair(good, goodKey)
	wrong, wrongKey := other.Leaf(t, "client-2")
	wrongPair, _ := tls.X509KeyPair(wrong, wrongKey)
	if err := try(nil); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("without a client certificate: %v; want the handshake refused (certificate required)", err)
	}
	if err := try(&wrongPair); err == nil {
		t.Error("a certificate of another CA got through")
	}
	if err := try(&goodPair); err != nil {
		t.Errorf("with a certificate of the client CA: %v", err)
	}
}

// tls.redirect_http answers plain HTTP with a 308 to the https URL, path
// and query kept, on the TLS listener's port.
func TestRedirectHTTP(t *testing.T) {
	r, _ := tlsRig(t, protoBackend(t).URL, "", `, redirect_http: "127.0.0.1:0"`)
	_, port, _ := net.SplitHostPort(r.srv.ProxyAddr().String())
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 5 * time.Second}
	for host, want := range map[string]string{
		"site.test":      "https://site.test:" + port + "/a/b?c=1&d=2",
		"site.test:8080": "https://site.test:" + port + "/a/b?c=1&d=2",
		"[::1]:80":       "https://[::1]:" + port + "/a/b?c=1&d=2",
	} {
		req, _ := http.NewRequest("POST", "http://"+r.srv.redirectLn.Addr().String()+"/a/b?c=1&d=2", nil)
		req.Host = host
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
			t.Errorf("Host %s: %d Location %q; want 308 %q", host, resp.StatusCode, resp.Header.Get("Location"), want)
		}
	}
}

// server.h2c serves HTTP/2 with prior knowledge beside HTTP/1.1 on one
// plain port.
func TestH2CPriorKnowledge(t *testing.T) {
	be := protoBackend(t)
	r := startFileRig(t, t.TempDir(), fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
server: { h2c: true }
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["%s"] }]
`, be.URL))
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	for _, c := range []struct {
		client *http.Client
		want   string
	}{{&http.Client{Transport: h2c}, "HTTP/2.0"}, {r.client, "HTTP/1.1"}} {
		resp, body := get(t, c.client, r.proxy+"/")
		if resp.StatusCode != 200 || resp.Proto != c.want || !strings.HasPrefix(body, "HTTP/1.1") {
			t.Errorf("%d %s (backend: %q); want 200 over %s", resp.StatusCode, resp.Proto, body, c.want)
		}
	}
}

// PROXY protocol: from a trusted peer the header's client address is the
// one forwarded; from an untrusted peer a header closes the connection
// unanswered (and is counted), while its plain requests are served.
func TestProxyProtocol(t *testing.T) {
	be := protoBackend(t)
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			list := "10.9.9.0/24"
			if trusted {
				list = "127.0.0.1"
			}
			r := startFileRig(t, t.TempDir(), fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
trusted_proxies: [%s]
server: { proxy_protocol: true }
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["%s"] }]
`, list, be.URL))
			exchange := func(raw string) (string, error) {
				c, err := net.Dial("tcp", r.srv.ProxyAddr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte(raw))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					return "", err
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return string(b), nil
			}
			req := "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
			v2 := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
			v2 = append(v2, 198, 51, 100, 20, 10, 0, 0, 1, 0x1f, 0x90, 1, 187)
			v1Body, v1Err := exchange("PROXY TCP4 203.0.113.9 10.0.0.1 40000 443\r\n" + req)
			v2Body, v2Err := exchange(string(v2) + req)
			plain, plainErr := exchange(req)
			if plainErr != nil || !strings.Contains(plain, "xff=127.0.0.1") {
				t.Errorf("plain request: %q %v; want it served with the peer's address", plain, plainErr)
			}
			if trusted {
				if v1Err != nil || !strings.Contains(v1Body, "xff=203.0.113.9") || v2Err != nil || !strings.Contains(v2Body, "xff=198.51.100.20") {
					t.Errorf("v1: %q %v; v2: %q %v; want the header's client addresses", v1Body, v1Err, v2Body, v2Err)
				}
				return
			}
			if v1Err == nil || v2Err == nil {
				t.Errorf("an untrusted peer's PROXY header was answered: %q / %q", v1Body, v2Body)
			}
			if n := series(scrape(t, r.admin)["canaryd_proxy_protocol_refused_total"])[""]; n != 2 {
				t.Errorf("canaryd_proxy_protocol_refused_total = %v, want 2", n)
			}
		})
	}
}

// The PROXY header comes before TLS (the balancer sends it first, then
// passes the client's handshake through): both layers work together.
func TestProxyProtocolBeforeTLS(t *testing.T) {
	r, ca := tlsRig(t, protoBackend(t).URL, "trusted_proxies: [127.0.0.1]\nserver: { proxy_protocol: true }", "")
	raw, err := net.Dial("tcp", r.srv.ProxyAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(raw, "PROXY TCP6 2001:db8::42 2001:db8::1 50000 443\r\n")
	c := tls.Client(raw, &tls.Config{RootCAs: ca.Pool, ServerName: "site.test", NextProtos: []string{"http/1.1"}})
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "xff=2001:db8::42") {
		t.Fatalf("%d %q; want the header's client address behind TLS", resp.StatusCode, body)
	}
}

// A client that opens a TCP connection to the TLS listener and never
// finishes its handshake is cut at read_header_timeout, as a slow
// HTTP/1.1 client is.
func TestStalledTLSHandshakeIsCut(t *testing.T) {
	r, _ := tlsRig(t, protoBackend(t).URL, "server: { read_header_timeout: 300ms }", "")
	for _, send := range []string{"", "\x16\x03\x01\x00"} { // nothing; half a record header
		c, err := net.Dial("tcp", r.srv.ProxyAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, send)
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c)
		c.Close()
		if took := time.Since(start); err != nil || took > 3*time.Second {
			t.Errorf("sent %q: connection closed after %v (%v); want about 300ms", send, took, err)
		}
	}
}
