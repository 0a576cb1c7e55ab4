package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"canaryd/rollout"
)

// fixed answers every call with the error it is given for the route.
type fixed struct {
	weightsOnly
	errs map[string]error
}

func (f fixed) Control(route string, a rollout.Action) (*rollout.Status, error) {
	if err := f.errs[route]; err != nil {
		return nil, err
	}
	return &rollout.Status{Route: route, Phase: rollout.Paused}, nil
}

func (f fixed) SetWeights(route string, w map[string]float64) (WeightsResult, error) {
	if err := f.errs[route]; err != nil {
		return WeightsResult{}, err
	}
	return WeightsResult{Route: route, Weights: w}, nil
}

func serve(h http.Handler, method, path, host, token, body string) *httptest.ResponseRecorder {
	var req *http.Request
	if body != "" {
		req = httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
	} else {
		req = httptest.NewRequest(method, path, nil)
	}
	req.Host = host
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// Mutations need the bearer token when one is set; reads do not. The API
// and the dashboard answer only to IP literals, localhost and
// allowed_hosts (DNS rebinding); /healthz, /readyz and /metrics answer
// any Host (probes use names).
func TestTokenAndHost(t *testing.T) {
	h := New(Options{Ready: func() bool { return true }, Routes: fixed{}, Token: "s3cret", AllowedHosts: []string{"canaryd.internal"},
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "m") }), Dashboard: http.NotFoundHandler(),
		Reload: func(context.Context) ReloadResult { return ReloadResult{Result: "applied"} }})
	for _, tc := range []struct {
		name, method, path, host, token string
		want                            int
	}{
		{"read without token", "GET", "/api/v1/routes", "127.0.0.1:9901", "", 200},
		{"mutation without token", "POST", "/api/v1/routes/web/pause", "127.0.0.1:9901", "", 401},
		{"mutation with a wrong token", "POST", "/api/v1/routes/web/pause", "127.0.0.1:9901", "guess", 401},
		{"mutation with the token", "POST", "/api/v1/routes/web/pause", "127.0.0.1:9901", "s3cret", 200},
		{"reload without token", "POST", "/api/v1/reload", "[::1]:9901", "", 401},
		{"reload with the token", "POST", "/api/v1/reload", "[::1]:9901", "s3cret", 200},
		{"a foreign Host on the API", "GET", "/api/v1/routes", "evil.example:9901", "", 403},
		{"a foreign Host with the token", "POST", "/api/v1/routes/web/pause", "evil.example", "s3cret", 403},
		{"localhost", "GET", "/api/v1/routes", "localhost:9901", "", 200},
		{"an allowed host, any case", "GET", "/api/v1/routes", "CanaryD.Internal:9901", "", 200},
		{"a foreign Host on the dashboard", "GET", "/", "evil.example", "", 403},
		{"a foreign Host on /healthz", "GET", "/healthz", "evil.example", "", 200},
		{"a foreign Host on /metrics", "GET", "/metrics", "evil.example", "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := serve(h, tc.method, tc.path, tc.host, tc.token, "")
			if w.Code != tc.want {
				t.Fatalf("%s %s (Host %s): %d %s; want %d", tc.method, tc.path, tc.host, w.Code, w.Body.String(), tc.want)
			}
			if w.Code == 401 && w.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	// A form post (no preflight from a browser) is refused whatever it holds.
	req := httptest.NewRequest("PUT", "/api/v1/routes/web/weights", strings.NewReader("blue=50"))
	req.Host, req.Header["Content-Type"] = "127.0.0.1", []string{"application/x-www-form-urlencoded"}
	req.Header.Set("Authorization", "Bearer s3cret")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusUnsupportedMediaType {
		t.Errorf("form body: %d", w.Code)
	}
}

// Each error the routes return maps to one status, with its message.
func TestStatusMapping(t *testing.T) {
	errs := map[string]error{
		"gone":     fmt.Errorf("%w: %q", ErrUnknownRoute, "gone"),
		"plain":    rollout.ErrNoRollout,
		"bad":      fmt.Errorf("%w: weights sum to 90%%", ErrInvalid),
		"owned":    fmt.Errorf("%w: route has a rollout", ErrConflict),
		"refused":  errors.New("cannot pause a rollout that is promoted"),
		"internal": errors.New("disk full"),
	}
	h := New(Options{Ready: func() bool { return false }, Routes: fixed{errs: errs},
		Broken: func() string { return "reload loop" },
		Reload: func(context.Context) ReloadResult { return ReloadResult{Result: "failed", Error: "line 3: bad"} }})
	for _, tc := range []struct {
		method, path, body string
		want               int
		says               string
	}{
		{"POST", "/api/v1/routes/gone/pause", "", 404, "gone"},
		{"POST", "/api/v1/routes/plain/pause", "", 404, "no rollout"},
		{"POST", "/api/v1/routes/refused/pause", "", 409, "cannot pause"},
		{"POST", "/api/v1/routes/web/explode", "", 404, "unknown action"},
		{"PUT", "/api/v1/routes/gone/weights", `{"blue":100}`, 404, "gone"},
		{"PUT", "/api/v1/routes/bad/weights", `{"blue":90}`, 400, "sum to 90%"},
		{"PUT", "/api/v1/routes/owned/weights", `{"blue":100}`, 409, "has a rollout"},
		{"PUT", "/api/v1/routes/internal/weights", `{"blue":100}`, 500, "disk full"},
		{"POST", "/api/v1/reload", "", 422, "line 3"},
		{"GET", "/api/v1/cluster", "", 404, "single process"},
		{"GET", "/readyz", "", 503, "not ready"},
		{"GET", "/healthz", "", 503, "broken: reload loop"},
	} {
		w := serve(h, tc.method, tc.path, "127.0.0.1:9901", "", tc.body)
		if w.Code != tc.want || !strings.Contains(w.Body.String(), tc.says) {
			t.Errorf("%s %s: %d %s; want %d saying %q", tc.method, tc.path, w.Code, strings.TrimSpace(w.Body.String()), tc.want, tc.says)
		}
	}
}
