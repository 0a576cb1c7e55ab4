package proxy

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"canaryd/balancer"
)

// The affinity cookie is Secure (with secure: auto) on answers over TLS,
// and behind a trusted proxy that says the client used https; never on
// a forced request's answer; and the propagated version is stamped on
// the request each instance gets, over what the client sent.
func TestAffinityCookieAndVersionStamp(t *testing.T) {
	seen := make(chan string, 8)
	inst := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("X-Canary-Version")
	}))
	spec := routeSpec(t, pool{"blue", 10000, []string{inst.URL}}, pool{"green", 0, []string{inst.URL}})
	spec.Pools[0].Version = "v1.4"
	spec.Affinity = &balancer.AffinitySpec{Cookie: "cd", Path: "/", Secure: balancer.SecureAuto, SameSite: http.SameSiteLaxMode}
	spec.PropagateHeader = "X-Canary-Version"
	spec.ForceHeader = "X-Canary-Pool"
	router := balancer.NewRouter()
	if _, err := router.Apply([]balancer.RouteSpec{spec}); err != nil {
		t.Fatal(err)
	}
	h := New(router, Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	plain := serve(t, h)
	secure := httptest.NewTLSServer(h)
	t.Cleanup(secure.Close)
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for _, tc := range []struct {
		name   string
		client *http.Client
		url    string
		hdr    map[string]string
		cookie string // "" none, "secure", "plain"
	}{
		{"plain http", http.DefaultClient, plain.URL, nil, "plain"},
		{"tls", tlsClient, secure.URL, nil, "secure"},
		{"trusted proxy says https", http.DefaultClient, plain.URL, map[string]string{"X-Forwarded-Proto": "https"}, "secure"},
		{"forced", http.DefaultClient, plain.URL, map[string]string{"X-Canary-Pool": "green"}, ""},
		{"client's own version replaced", http.DefaultClient, plain.URL, map[string]string{"X-Canary-Version": "v9"}, "plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, tc.url+"/", nil)
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			set := resp.Header.Get("Set-Cookie")
			switch {
			case tc.cookie == "" && set != "":
				t.Errorf("Set-Cookie %q on a forced request", set)
			case tc.cookie == "secure" && !strings.HasSuffix(set, "; Secure"):
				t.Errorf("Set-Cookie %q, want Secure", set)
			case tc.cookie == "plain" && (!strings.HasPrefix(set, "cd=1.") || strings.Contains(set, "Secure")):
				t.Errorf("Set-Cookie %q, want one without Secure", set)
			}
			want := "v1.4"
			if tc.cookie == "" {
				want = "green" // a pool without a version is its name
			}
			if got := <-seen; got != want {
				t.Errorf("the instance got X-Canary-Version %q, want %q", got, want)
			}
		})
	}
}

func TestClientAddr(t *testing.T) {
	h := New(balancer.NewRouter(), Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	for _, tc := range []struct {
		peer string
		xff  []string
		want string
	}{
		{"192.0.2.1:5", []string{"198.51.100.7"}, "192.0.2.1"},                          // untrusted peer: its own address
		{"10.0.0.1:5", []string{"198.51.100.7"}, "198.51.100.7"},                        // behind a trusted proxy
		{"10.0.0.1:5", []string{"203.0.113.9, 198.51.100.7, 10.0.0.2"}, "198.51.100.7"}, // the nearest untrusted hop
		{"10.0.0.1:5", []string{"203.0.113.9", "198.51.100.7"}, "198.51.100.7"},         // several lines
		{"10.0.0.1:5", []string{"bogus, 10.0.0.3"}, "10.0.0.1"},                         // a broken list: the proxy itself
		{"10.0.0.1:5", nil, "10.0.0.1"},
		{"[::ffff:192.0.2.1]:5", nil, "192.0.2.1"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = tc.peer
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := h.clientAddr(r).String(); got != tc.want {
			t.Errorf("peer %s xff %q: %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
}

// A request retried on another pool (its instance refused the
// connection) carries that pool's version: the next hop sees the version
// that served.
func TestPropagatedVersionFollowsARetry(t *testing.T) {
	seen := make(chan string, 2)
	green := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("X-Canary-Version")
	}))
	dead := serve(t, http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // refuses connections
	spec := routeSpec(t, pool{"blue", 10000, []string{deadURL}}, pool{"green", 0, []string{green.URL}})
	spec.Pools[1].Weight, spec.Pools[0].Weight = 1, 9999 // green weighted, so the retry may go there
	spec.Pools[0].Version, spec.Pools[1].Version = "v1", "v2"
	spec.PropagateHeader = "X-Canary-Version"
	r := newRig(t, Options{}, spec)
	resp, err := r.client.Get(r.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := <-seen; got != "v2" {
		t.Fatalf("the retried request carried version %q, want the serving pool's v2", got)
	}
}
