package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"canaryd/config"
)

// maxMetricBody bounds a metric source's answer read for one number.
const maxMetricBody = 4 << 20

// checkVars are an http check's template variables: the analysis' span
// and the rollout's pools.
type checkVars struct {
	route, stable, canary string
	start, end            time.Time
}

func (v checkVars) pairs() []string {
	return []string{
		"{{route}}", v.route, "{{pool}}", v.canary, "{{canary}}", v.canary, "{{stable}}", v.stable,
		"{{window}}", promDuration(v.end.Sub(v.start)),
		"{{start}}", v.start.UTC().Format(time.RFC3339), "{{end}}", v.end.UTC().Format(time.RFC3339),
		"{{start_unix}}", strconv.FormatInt(v.start.Unix(), 10), "{{end_unix}}", strconv.FormatInt(v.end.Unix(), 10),
	}
}

// expandURL fills a URL's variables, query-escaped, then percent-encodes
// what a request line cannot carry (spaces, quotes, braces...), so that a
// query can be written readably in the config ("q=SELECT ... WHERE
// pool='{{canary}}'"). %XX, &, = and + are left as written.
func (v checkVars) expandURL(s string) string {
	p := v.pairs()
	for i := 1; i < len(p); i += 2 {
		p[i] = url.QueryEscape(p[i])
	}
	return encodeLoose(strings.NewReplacer(p...).Replace(s))
}

func (v checkVars) expandBody(s string) string { return strings.NewReplacer(v.pairs()...).Replace(s) }

// encodeLoose percent-encodes the bytes RFC 3986 allows nowhere in a URL.
func encodeLoose(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"<>\\^`{|}", c) >= 0 {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// httpChecker runs analysis.http checks.
type httpChecker struct {
	hc *http.Client
}

func newHTTPChecker() *httpChecker { return &httpChecker{hc: &http.Client{}} }

// run judges each check. No answer, an answer that is not 2xx JSON, or one
// without the number is inconclusive (missing: fail makes the last a
// failure), never a pass.
func (h *httpChecker) run(ctx context.Context, checks []config.HTTPCheck, vars checkVars) []Verdict {
	out := make([]Verdict, 0, len(checks))
	for i := range checks {
		c := &checks[i]
		v := Verdict{Check: "http:" + c.Name, Result: Inconclusive}
		val, why, missing := h.fetch(ctx, c, vars)
		switch {
		case missing && c.Missing == config.MissingFail:
			v.Result, v.Reason = Fail, why+" (missing: fail)"
		case why != "":
			v.Reason = why
		default:
			v.bounded(c.Name, val, c.Min, c.Max)
		}
		out = append(out, v)
	}
	return out
}

// fetch asks the source and reads the number; why says what went wrong,
// and missing whether the answer came but held no number.
func (h *httpChecker) fetch(ctx context.Context, c *config.HTTPCheck, vars checkVars) (val float64, why string, missing bool) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout.D())
	defer cancel()
	u := vars.expandURL(c.URL)
	var body io.Reader
	if c.Body != "" {
		body = strings.NewReader(vars.expandBody(c.Body))
	}
	req, err := http.NewRequestWithContext(ctx, c.Method, u, body)
	if err != nil {
		return 0, "cannot build the request: " + err.Error(), false
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "canaryd-analysis")
	if c.Body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for name, hv := range c.Headers {
		if strings.EqualFold(name, "Host") {
			req.Host = hv.Text()
			continue
		}
		req.Header.Set(name, hv.Text())
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Sprintf("no answer within timeout %v", c.Timeout), false
		}
		return 0, "request failed: " + err.Error(), false
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxMetricBody+1))
	switch {
	case err != nil:
		return 0, fmt.Sprintf("status %d, then the body broke off: %v", resp.StatusCode, err), false
	case resp.StatusCode/100 != 2:
		return 0, fmt.Sprintf("the source answered status %d: %s", resp.StatusCode, clip(string(data), 200)), false
	case len(data) > maxMetricBody:
		return 0, fmt.Sprintf("the answer is over %d MiB; ask for one number", maxMetricBody>>20), false
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return 0, fmt.Sprintf("the answer is not JSON (%v): %s", err, clip(string(data), 200)), false
	}
	x, err := c.Path().Select(doc)
	if err != nil {
		return 0, fmt.Sprintf("no data: %s: %v; the answer: %s", c.Path(), err, clip(string(data), 200)), true
	}
	switch x := x.(type) {
	case json.Number:
		val, err = x.Float64()
	case string: // Prometheus writes sample values as strings
		val, err = strconv.ParseFloat(x, 64)
	case nil:
		return 0, fmt.Sprintf("no data: %s is null", c.Path()), true
	default:
		return 0, fmt.Sprintf("%s is %T, not a number", c.Path(), x), false
	}
	if err != nil {
		return 0, fmt.Sprintf("%s is not a number: %v", c.Path(), err), false
	}
	if math.IsNaN(val) || math.IsInf(val, 0) {
		return 0, fmt.Sprintf("no data: %s is %g (a rate over no requests?)", c.Path(), val), true
	}
	return val, "", false
}
