package rollout

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"canaryd/config"
)

func httpChecks(t *testing.T, block string) []config.HTTPCheck {
	t.Helper()
	return webRoutes(t, `{ stable: blue, canary: green, analysis: { http: [`+block+`] } }`)[0].Rollout.Analysis.HTTP
}

// Each kind of answer from a real HTTP server gives its documented verdict;
// an answer without the number is never a pass.
func TestHTTPCheckAnswers(t *testing.T) {
	var mu sync.Mutex
	var lastQuery, lastBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/num" {
			mu.Lock()
			lastQuery, lastBody = r.URL.Query().Get("q"), string(b)
			mu.Unlock()
		}
		switch r.URL.Path {
		case "/num":
			io.WriteString(w, `{"results":[{"series":[{"values":[["2026-12-05T10:00:00Z",0.031]]}]}]}`)
		case "/str":
			io.WriteString(w, `{"status":"success","data":{"result":[{"value":[1765000000.1,"0.5"]}]}}`)
		case "/empty":
			io.WriteString(w, `{"results":[{"statement_id":0}]}`)
		case "/null":
			io.WriteString(w, `{"v":null}`)
		case "/nan":
			io.WriteString(w, `{"v":"NaN"}`)
		case "/bool":
			io.WriteString(w, `{"v":true}`)
		case "/html":
			io.WriteString(w, "<html>login</html>")
		case "/500":
			w.WriteHeader(500)
			io.WriteString(w, `{"error":"database not found: shop"}`)
		case "/slow":
			time.Sleep(time.Second)
		}
	}))
	defer srv.Close()
	start := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	vars := checkVars{route: "web", stable: "blue", canary: "green", start: start, end: start.Add(45 * time.Second)}
	for _, tc := range []struct {
		check    string
		want     Result
		inReason string
	}{
		{`{ name: n, url: "` + srv.URL + `/num", json_path: "$.results[0].series[0].values[0][1]", max: 0.05 }`, Pass, "n = 0.031 (max 0.05)"},
		{`{ name: n, url: "` + srv.URL + `/num", json_path: "$.results[0].series[0].values[0][1]", max: 0.01 }`, Fail, "n = 0.031"},
		{`{ name: n, url: "` + srv.URL + `/str", json_path: "$.data.result[0].value[1]", min: 0.9 }`, Fail, "n = 0.5 (min 0.9)"},
		{`{ name: n, url: "` + srv.URL + `/empty", json_path: "$.results[0].series[0].values[0][1]", max: 1 }`, Inconclusive, `no data: $.results[0].series[0].values[0][1]: $.results[0] has no key "series"`},
		{`{ name: n, url: "` + srv.URL + `/empty", json_path: "$.results[0].series[0].values[0][1]", max: 1, missing: fail }`, Fail, "(missing: fail)"},
		{`{ name: n, url: "` + srv.URL + `/null", json_path: "$.v", max: 1 }`, Inconclusive, "is null"},
		{`{ name: n, url: "` + srv.URL + `/nan", json_path: "$.v", max: 1 }`, Inconclusive, "NaN"},
		{`{ name: n, url: "` + srv.URL + `/bool", json_path: "$.v", max: 1, missing: fail }`, Inconclusive, "not a number"},
		{`{ name: n, url: "` + srv.URL + `/html", json_path: "$.v", max: 1, missing: fail }`, Inconclusive, "not JSON"},
		{`{ name: n, url: "` + srv.URL + `/500", json_path: "$.v", max: 1, missing: fail }`, Inconclusive, "status 500: {\"error\":\"database not found: shop\"}"},
		{`{ name: n, url: "` + srv.URL + `/slow", json_path: "$.v", max: 1, timeout: 100ms }`, Inconclusive, "no answer within timeout 100ms"},
	} {
		vs := newHTTPChecker().run(context.Background(), httpChecks(t, tc.check), vars)
		if len(vs) != 1 || vs[0].Result != tc.want || !strings.Contains(vs[0].Reason, tc.inReason) || vs[0].Check != "http:n" {
			t.Errorf("%s: %+v; want %s with %q", tc.check, vs, tc.want, tc.inReason)
		}
	}
	// The variables, readable in the config, arrive escaped in the URL and
	// as written in the body.
	newHTTPChecker().run(context.Background(), httpChecks(t, `{ name: n, method: POST, url: "`+srv.URL+`/num?db=shop&q=SELECT sum(failed) FROM checkout WHERE pool='{{canary}}' AND time >= '{{start}}' AND time < '{{end}}'",
      body: '{"route": "{{route}}", "window": "{{window}}", "from": {{start_unix}}}', json_path: "$.results[0].series[0].values[0][1]", max: 1 }`), vars)
	mu.Lock()
	defer mu.Unlock()
	if want := "SELECT sum(failed) FROM checkout WHERE pool='green' AND time >= '2026-12-05T10:00:00Z' AND time < '2026-12-05T10:00:45Z'"; lastQuery != want {
		t.Errorf("query %q\nwant  %q", lastQuery, want)
	}
	if want := `{"route": "web", "window": "45s", "from": 1796464800}`; lastBody != want {
		t.Errorf("body %q, want %q", lastBody, want)
	}
}

func TestEncodeLoose(t *testing.T) {
	for in, want := range map[string]string{
		"http://h/q?q=SELECT a FROM b": "http://h/q?q=SELECT%20a%20FROM%20b",
		`http://h/q?a="x"&b=%20+c`:     "http://h/q?a=%22x%22&b=%20+c",
		"http://h/p?x={y}|z":           "http://h/p?x=%7By%7D%7Cz",
		"http://h/é":                   "http://h/%C3%A9",
	} {
		if got := encodeLoose(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
