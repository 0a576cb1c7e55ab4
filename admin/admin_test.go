package admin

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"canaryd/rollout"
)

// weightsOnly is a Routes that checks weights the way canaryd does (pools
// blue and green, summing to 100) and keeps nothing else: the fuzz target is
// the API's decoding, not the routing.
type weightsOnly struct{}

func (weightsOnly) Routes() []RouteView            { return nil }
func (weightsOnly) Route(string) (RouteView, bool) { return RouteView{}, false }
func (weightsOnly) Control(string, rollout.Action) (*rollout.Status, error) {
	return nil, rollout.ErrNoRollout
}
func (weightsOnly) Approve(string, rollout.Approval) (*rollout.Status, error) {
	return nil, rollout.ErrNoRollout
}
func (weightsOnly) Series(string, time.Duration, time.Duration) (map[string][]Point, error) {
	return nil, ErrUnknownRoute
}
func (weightsOnly) SetWeights(route string, w map[string]float64) (WeightsResult, error) {
	if len(w) != 2 || w["blue"]+w["green"] != 100 {
		return WeightsResult{}, errors.Join(ErrInvalid, errors.New("weights"))
	}
	return WeightsResult{Route: route, Weights: w, Version: 1}, nil
}

// FuzzWeightsBody: whatever body arrives on PUT .../weights, the API answers
// 200, 400 or 413 with a JSON body, and never panics.
func FuzzWeightsBody(f *testing.F) {
	for _, seed := range []string{`{"blue": 90, "green": 10}`, `{"blue": 1e309}`, `[]`, `{"blue": "x"}`, `{`, `null`, `{"a":1}{"b":2}`, strings.Repeat("[", 10000)} {
		f.Add(seed)
	}
	h := New(Options{Ready: func() bool { return true }, Routes: weightsOnly{}})
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPut, "/api/v1/routes/web/weights", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Host = "127.0.0.1:9901" // the admin's own address (TestTokenAndHost checks Host)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case 200, 400, 413:
		default:
			t.Fatalf("%.80q: status %d", body, w.Code)
		}
		if !strings.HasPrefix(strings.TrimSpace(w.Body.String()), "{") {
			t.Fatalf("%.80q: answer is not JSON: %.200s", body, w.Body.String())
		}
	})
}
