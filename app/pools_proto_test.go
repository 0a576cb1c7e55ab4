package app

import (
	"bufio"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"canaryd/internal/testcerts"
)

// h2cBackend speaks HTTP/2 with prior knowledge only (no HTTP/1.1).
func h2cBackend(t *testing.T, h http.Handler) string {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// tlsInstance is an HTTPS (and HTTP/2) instance with a certificate of ca
// for name; with clientCA it requires a client certificate of that CA.
// Failed handshakes are expected (a wrong CA, on purpose): not logged.
func tlsInstance(t *testing.T, ca *testcerts.CA, name string, clientCA *testcerts.CA) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(protoHandler)
	c, k := ca.Leaf(t, name)
	pair, _ := tls.X509KeyPair(c, k)
	s.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	if clientCA != nil {
		s.TLS.ClientAuth, s.TLS.ClientCAs = tls.RequireAndVerifyClientCert, clientCA.Pool
	}
	s.EnableHTTP2 = true
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

var protoHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Trailer", "X-Checksum")
	fmt.Fprintf(w, "%s tls=%v", r.Proto, r.TLS != nil)
	w.Header().Set("X-Checksum", "abc")
})

// Pools speak their protocol: h2c to a server that speaks nothing else,
// h2 over TLS with a CA file, a server name and a client certificate
// (the instance requires one), and HTTP/1.1; HTTP/1.1 and HTTP/2 clients
// reach each, trailers intact to HTTP/2 clients. (An HTTP/2 instance may
// send trailers after a Content-Length, which HTTP/1.1 cannot carry: an
// HTTP/1.1 client gets them only from an HTTP/1.1 pool, as with nginx.) A
// new CA file in place is used without a config change or a restart.
func TestPoolProtocolsAndUpstreamTLS(t *testing.T) {
	dir := t.TempDir()
	instCA, clientCA := testcerts.NewCA(t, "instances' CA"), testcerts.NewCA(t, "canaryd's client CA")
	// The h2 instance: TLS, a certificate for inst.test only, and it
	// wants a client certificate of clientCA.
	h2 := tlsInstance(t, instCA, "inst.test", clientCA)
	wrongCA := testcerts.NewCA(t, "not the instances' CA")
	caFile := wrongCA.WriteCA(t, dir, "upstream-ca") // fixed below, live
	cc, ck := clientCA.WriteLeaf(t, dir, "canaryd-client", "canaryd")
	h1 := httptest.NewServer(protoHandler)
	t.Cleanup(h1.Close)
	r := startFileRig(t, dir, fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
reload: { debounce: 50ms }
server: { h2c: true }
routes:
  - name: h2c
    match: { path_prefix: /h2c }
    pools: [{ name: a, weight: 100, protocol: h2c, instances: ["%s"] }]
  - name: h2
    match: { path_prefix: /h2 }
    pools:
      - name: a
        weight: 100
        protocol: h2
        instances: ["%s"]
        tls: { ca_file: %s, server_name: inst.test, cert_file: %s, key_file: %s }
  - name: h1
    pools: [{ name: a, weight: 100, instances: ["%s"] }]
`, h2cBackend(t, protoHandler), h2.URL, caFile, cc, ck, h1.URL))
	h2client := &http.Transport{Protocols: new(http.Protocols)}
	h2client.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(h2client.CloseIdleConnections)
	clients := map[string]*http.Client{"HTTP/1.1": r.client, "HTTP/2.0": {Transport: h2client, Timeout: 10 * time.Second}}
	check := func(path, want string) {
		t.Helper()
		for proto, c := range clients {
			resp, body := get(t, c, r.proxy+path)
			trailerLost := proto == "HTTP/1.1" && strings.HasPrefix(want, "HTTP/2")
			if resp.StatusCode != 200 || resp.Proto != proto || body != want || (resp.Trailer.Get("X-Checksum") != "abc") != trailerLost {
				t.Errorf("%s client, %s: %d %s %q trailer %q; want 200 %q and the trailer", proto, path, resp.StatusCode, resp.Proto, body, resp.Trailer.Get("X-Checksum"), want)
			}
		}
	}
	check("/h2c", "HTTP/2.0 tls=false")
	check("/x", "HTTP/1.1 tls=false")
	// The CA file names the wrong CA: the instance is not trusted.
	if resp, _ := get(t, r.client, r.proxy+"/h2"); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("instance signed by an untrusted CA: %d, want 502", resp.StatusCode)
	}
	testcerts.Write(t, caFile, instCA.PEM)
	for end := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, _ := get(t, r.client, r.proxy+"/h2"); resp.StatusCode == 200 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the new CA file was not used within 3s")
		}
	}
	check("/h2", "HTTP/2.0 tls=true")
}

// WebSockets (HTTP/1.1 upgrade over TLS) and Server-Sent Events (to an
// HTTP/2 client) pass through a TLS listener to an HTTP/1.1 pool, the
// events unbuffered.
func TestWebSocketAndSSEOverTLS(t *testing.T) {
	r, ca := tlsRig(t, streamBackend(t).URL, "", "")
	addr := r.srv.ProxyAddr().String()

	// WebSocket: the client asks for HTTP/1.1 by ALPN and upgrades.
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "site.test", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: site.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("upgrade over TLS: %d %v", resp.StatusCode, resp.Header)
	}
	io.WriteString(c, "ping over tls")
	echo := make([]byte, len("ping over tls"))
	if _, err := io.ReadFull(br, echo); err != nil || string(echo) != "ping over tls" {
		t.Fatalf("tunnel echo: %q %v", echo, err)
	}

	// SSE to an HTTP/2 client: each event arrives on its own, while the
	// stream goes on (the backend sends one every 50ms, forever).
	client, tr := tlsClient(ca.Pool, "site.test", true, false)
	defer tr.CloseIdleConnections()
	resp, err = client.Get("https://" + addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Proto != "HTTP/2.0" {
		t.Fatalf("SSE over %s, want HTTP/2.0", resp.Proto)
	}
	sc := bufio.NewScanner(resp.Body)
	for want := 0; want < 3; {
		if !sc.Scan() {
			t.Fatalf("stream ended: %v", sc.Err())
		}
		if line := sc.Text(); strings.HasPrefix(line, "data: ") {
			if line != fmt.Sprintf("data: %d", want) {
				t.Fatalf("event %q, want data: %d", line, want)
			}
			want++
		}
	}
}

// A reload that names new TLS files moves the watch to them: an edit of a
// file the first config did not name is picked up by its event, well
// before the 30s poll.
func TestWatchFollowsNewTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ca, wrong := testcerts.NewCA(t, "instances' CA"), testcerts.NewCA(t, "wrong CA")
	inst := tlsInstance(t, ca, "127.0.0.1", nil)
	first, second := wrong.WriteCA(t, dir, "first"), wrong.WriteCA(t, dir, "second")
	cfg := func(caFile string) string {
		return fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
reload: { debounce: 50ms }
routes:
  - name: web
    pools: [{ name: a, weight: 100, instances: ["%s"], tls: { ca_file: %s } }]
`, inst.URL, caFile)
	}
	r := startFileRig(t, dir, cfg(first))
	if resp, _ := get(t, r.client, r.proxy+"/"); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("untrusted instance: %d", resp.StatusCode)
	}
	writeFile(t, r.path, cfg(second))
	r.next("applied", 3*time.Second)
	time.Sleep(200 * time.Millisecond) // the watch restarts on the new set
	testcerts.Write(t, second, ca.PEM)
	for end := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, _ := get(t, r.client, r.proxy+"/"); resp.StatusCode == 200 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("an edit of the newly named CA file was not picked up within 3s")
		}
	}
}
