package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"canaryd/admin"
)

// registeredConfig is a route whose two pools take registrations, probed
// at / every 100ms, with a rollout (blue → green).
func registeredConfig(t *testing.T, dir string) string {
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
state_dir: %q
routes:
  - name: web
    health: { active: { path: /, interval: 100ms } }
    rollout: { stable: blue, canary: green, steps: [10, 100], interval: 1h }
    pools:
      - { name: blue, weight: 100, registered: true }
      - { name: green, weight: 0, registered: true }
  - name: static
    match: { path_prefix: /static }
    pools:
      - { name: only, weight: 100, instances: ["127.0.0.1:9"] }
`, filepath.Join(dir, "state")))
	return path
}

func (r *rig) api(method, path, body string) (int, string) {
	r.t.Helper()
	req, _ := http.NewRequest(method, r.admin+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e struct{ Error string }
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return resp.StatusCode, e.Error // the message, unescaped
	}
	return resp.StatusCode, string(data)
}

func (r *rig) waitFor(what string, within time.Duration, ok func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The registration API end to end on loopback: instances registered into
// a pool serve once their first probe passes, under steady load with no
// failed request while the set is replaced, grown, shrunk and emptied by
// a lease; bad requests are refused whole; a restart serves the same set.
func TestRegistrationAPI(t *testing.T) {
	long(t)
	dir := t.TempDir()
	path := registeredConfig(t, dir)
	r := startRig(t, path)
	v1 := []*named{newNamed(t, "v1-a", 0), newNamed(t, "v1-b", 0)}
	v2 := []*named{newNamed(t, "v2-a", 0), newNamed(t, "v2-b", 0), newNamed(t, "v2-c", 0)}
	host := func(n *named) string { return strings.TrimPrefix(n.URL, "http://") }
	base := "/api/v1/routes/web/pools/"

	// Before any registration the route has no instance: 503, and the
	// rollout waits for its canary.
	if code, body := r.api("GET", base+"blue/instances", ""); code != 200 || !strings.Contains(body, `"source": "registration"`) {
		t.Fatalf("GET empty pool: %d %s", code, body)
	}
	if st, _ := r.srv.rollouts.Status("web"); st.Phase != "idle" || !strings.Contains(st.Reason, "no instances yet") {
		t.Fatalf("rollout before registrations: %s (%s)", st.Phase, st.Reason)
	}

	code, body := r.api("PUT", base+"blue/instances", fmt.Sprintf(`{"version": "v1", "instances": [%q, %q]}`, host(v1[0]), host(v1[1])))
	if code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	r.waitFor("v1 serving", 5*time.Second, func() bool {
		resp, err := r.client.Get(r.proxy + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	stop := make(chan struct{})
	wait := r.load(4, stop)

	// Bad input, each a clear 4xx, nothing half-applied.
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf("%q", fmt.Sprintf("127.0.0.1:%d", 20000+i))
	}
	for _, tc := range []struct {
		method, path, body string
		code               int
		says               string
	}{
		{"PUT", "/api/v1/routes/shop/pools/blue/instances", `{"instances": ["127.0.0.1:1"]}`, 404, `no route "shop"`},
		{"PUT", base + "teal/instances", `{"instances": ["127.0.0.1:1"]}`, 404, `has no pool "teal"; its pools are blue, green`},
		{"POST", "/api/v1/routes/static/pools/only/instances", `{"instances": ["127.0.0.1:1"]}`, 409, "registered: true"},
		{"PUT", base + "blue/instances", `{"instances": ["127.0.0.1:1", "not an address"]}`, 400, "instances[1]"},
		{"PUT", base + "blue/instances", `{"instances": ["127.0.0.1:1", "127.0.0.1:1"]}`, 400, "list each instance once"},
		{"POST", base + "blue/instances", `{"instances": ["127.0.0.1:1"], "ttl": "1s"}`, 400, "lease minimum"},
		{"POST", base + "blue/instances", `{"instances": ["127.0.0.1:1"], "ttl": "48h"}`, 400, "24h"},
		{"PUT", base + "blue/instances", `{"instances": [` + strings.Join(many, ",") + `]}`, 400, "at most 1000"},
		{"PUT", base + "blue/instances", `{"instances": ["` + strings.Repeat("a", 1<<20) + `"]}`, 413, "body over"},
		{"PUT", base + "blue/instances", `{"instance": ["127.0.0.1:1"]}`, 400, `unknown field "instance"`},
		{"POST", base + "blue/instances", `{"version": "v9", "instances": ["127.0.0.1:1"]}`, 409, `runs version "v1"`},
		{"DELETE", base + "blue/instances/" + url.PathEscape("127.0.0.1:1"), ``, 404, "is not registered"},
	} {
		code, body := r.api(tc.method, tc.path, tc.body)
		if code != tc.code || !strings.Contains(body, tc.says) {
			t.Errorf("%s %s: %d %.200s; want %d saying %q", tc.method, tc.path, code, body, tc.code, tc.says)
		}
	}
	// An IPv6 instance, removed by its address in brackets, URL-escaped
	// (nothing listens there: it never passes a probe, never serves).
	if code, body := r.api("POST", base+"blue/instances", `{"instances": ["[::1]:1"]}`); code != 200 || !strings.Contains(body, "http://[::1]:1") {
		t.Fatalf("POST of an IPv6 instance: %d %s", code, body)
	}
	if code, body := r.api("DELETE", base+"blue/instances/"+url.PathEscape("[::1]:1"), ""); code != 200 || strings.Contains(body, "[::1]") {
		t.Fatalf("DELETE of an IPv6 instance: %d %s", code, body)
	}
	var view admin.InstancesView
	_, body = r.api("GET", base+"blue/instances", "")
	json.Unmarshal([]byte(body), &view)
	if len(view.Instances) != 2 || view.Version != "v1" {
		t.Fatalf("after the bad requests blue is %s", body)
	}

	// v2 registers itself into green with a lease and heartbeats: the
	// rollout starts by itself, at its first step.
	for _, n := range v2[:2] {
		if code, body := r.api("POST", base+"green/instances", fmt.Sprintf(`{"version": "v2", "instances": [%q], "ttl": "3s"}`, host(n))); code != 200 {
			t.Fatalf("POST: %d %s", code, body)
		}
	}
	r.waitFor("the rollout of v2", 5*time.Second, func() bool {
		st, _ := r.srv.rollouts.Status("web")
		return st.Phase == "progressing" && st.CanaryVersion == "v2" && st.StableVersion == "v1"
	})
	r.waitFor("v2 taking traffic", 5*time.Second, func() bool { return v2[0].hits.Load()+v2[1].hits.Load() > 0 })
	started, _ := r.srv.rollouts.Status("web")
	// Scale-out within v2, then one replaced: the rollout stays at its step.
	if code, body := r.api("POST", base+"green/instances", fmt.Sprintf(`{"instances": [%q], "ttl": "3s"}`, host(v2[2]))); code != 200 {
		t.Fatalf("POST without version: %d %s", code, body)
	}
	r.waitFor("v2-c taking traffic", 5*time.Second, func() bool { return v2[2].hits.Load() > 0 })
	if code, body := r.api("DELETE", base+"green/instances/"+url.PathEscape(host(v2[0])), ""); code != 200 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if st, _ := r.srv.rollouts.Status("web"); st.Phase != "progressing" || st.Step != 1 || len(st.History) != len(started.History) {
		t.Fatalf("churn within v2 moved the rollout: %s at step %d, %d events (%d before)", st.Phase, st.Step, len(st.History), len(started.History))
	}
	// v2's group stops heartbeating: the leases expire, green empties.
	r.waitFor("the leases to expire", 10*time.Second, func() bool {
		_, body := r.api("GET", base+"green/instances", "")
		return strings.Contains(body, `"instances": []`)
	})
	time.Sleep(300 * time.Millisecond)
	close(stop)
	ok, bad, first := wait()
	if bad != 0 || ok == 0 {
		t.Fatalf("under changes of registrations: %d ok, %d failed (first: %s)", ok, bad, first)
	}
	t.Logf("%d requests while instances registered, expired and were removed: 0 failed", ok)

	// A restart serves the same registered set.
	r.srv = nil
	r2 := startRig(t, path)
	_, body = r2.api("GET", base+"blue/instances", "")
	if !strings.Contains(body, host(v1[0])) || !strings.Contains(body, host(v1[1])) || !strings.Contains(body, `"version": "v1"`) {
		t.Fatalf("after restart blue is %s", body)
	}
}
