package rollout

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"canaryd/config"
)

// A gate's answer is read up to this size; a larger body is not read as a
// verdict (the status decides), so a receiver that streams megabytes back
// costs one buffer, not the gate's timeout.
const maxGateBody = 64 << 10

// maxRetryAfter caps the wait a 429 or 503 asks for between attempts.
const maxRetryAfter = time.Minute

// gateRequest is the JSON body a gate receives (unless its config sets
// body): what is about to happen, so the receiver can test it.
type gateRequest struct {
	Route         string  `json:"route"`
	Release       string  `json:"release"`
	Gate          string  `json:"gate"`
	At            string  `json:"at"`
	Phase         Phase   `json:"phase"`
	Step          int     `json:"step"`
	Steps         int     `json:"steps"`
	Stable        string  `json:"stable"`
	Canary        string  `json:"canary"`
	StableVersion string  `json:"stable_version,omitempty"`
	CanaryVersion string  `json:"canary_version,omitempty"`
	CanaryWeight  float64 `json:"canary_weight"`
	// NextWeight is the canary's weight once the gate passes (the weight
	// it had, for a rollback gate).
	NextWeight float64 `json:"next_weight"`
	DryRun     bool    `json:"dry_run,omitempty"`
}

// gateAnswer is the optional JSON body of a gate's answer.
type gateAnswer struct {
	Verdict *string `json:"verdict"`
	Reason  string  `json:"reason"`
}

// gateClient calls gates. It follows no redirect: a gate that moved must
// be configured where it is, not trusted to send canaryd elsewhere.
type gateClient struct {
	hc *http.Client
}

func newGateClient() *gateClient {
	return &gateClient{hc: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// body is what gate g is sent: its body template filled in, or the JSON
// description.
func gateBody(g *config.Gate, req gateRequest) []byte {
	if g.Body == "" {
		b, _ := json.Marshal(req)
		return b
	}
	pct := func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
	return []byte(strings.NewReplacer(
		"{{route}}", req.Route, "{{release}}", req.Release, "{{gate}}", req.Gate, "{{at}}", req.At,
		"{{stable}}", req.Stable, "{{canary}}", req.Canary, "{{step}}", strconv.Itoa(req.Step),
		"{{weight}}", pct(req.CanaryWeight), "{{next_weight}}", pct(req.NextWeight),
	).Replace(g.Body))
}

// Sign is the X-Canary-Signature of body under key: "sha256=" and the
// hex HMAC-SHA256.
func Sign(key string, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// call asks gate g, retrying an inconclusive answer Retries times (after
// the Retry-After a 429 or 503 gives, else after a growing pause). A pass
// or a fail is never retried.
func (gc *gateClient) call(ctx context.Context, g *config.Gate, body []byte) Verdict {
	attempts := 1 + *g.Retries
	for a := 1; ; a++ {
		v, wait := gc.once(ctx, g, body)
		v.Check, v.DryRun = "gate:"+g.Name, g.DryRun
		v.Advisory = g.DryRun || g.At == config.GateRollback
		if v.Result != Inconclusive || a >= attempts || ctx.Err() != nil {
			if attempts > 1 {
				v.Reason += fmt.Sprintf(" (attempt %d of %d)", a, attempts)
			}
			return v
		}
		if wait <= 0 {
			wait = time.Duration(a) * 500 * time.Millisecond
		}
		t := time.NewTimer(min(wait, maxRetryAfter))
		select {
		case <-ctx.Done():
			t.Stop()
			v.Reason += " (stopped waiting to retry: the rollout moved on)"
			return v
		case <-t.C:
		}
	}
}

// once makes one attempt; wait is the Retry-After of a 429 or 503.
func (gc *gateClient) once(ctx context.Context, g *config.Gate, body []byte) (v Verdict, wait time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, g.Timeout.D())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, g.Method, g.URL, bytes.NewReader(body))
	if err != nil {
		return Verdict{Result: Fail, Reason: "cannot build the request: " + err.Error()}, 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "canaryd-gate")
	for name, h := range g.Headers {
		if strings.EqualFold(name, "Host") {
			req.Host = h.Text()
			continue
		}
		req.Header.Set(name, h.Text())
	}
	if key := g.Secret(); key != "" {
		req.Header.Set("X-Canary-Signature", Sign(key, body))
	}
	start := time.Now()
	resp, err := gc.hc.Do(req)
	if err != nil {
		why := err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			why = fmt.Sprintf("no answer within timeout %v", g.Timeout)
		}
		return Verdict{Result: Inconclusive, Reason: why}, 0
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxGateBody+1))
	took := time.Since(start).Round(time.Millisecond)
	v = Verdict{Value: float64(resp.StatusCode)}
	status := fmt.Sprintf("status %d in %v", resp.StatusCode, took)
	if err != nil && resp.StatusCode/100 == 2 {
		return Verdict{Result: Inconclusive, Value: v.Value, Reason: status + ", then the body broke off: " + err.Error()}, 0
	}
	ans, isVerdict, bad := readAnswer(data)
	switch code := resp.StatusCode; {
	case code/100 == 3:
		v.Result = Fail
		v.Reason = fmt.Sprintf("%s: a redirect to %q, which canaryd does not follow; set the gate's url to the address that answers", status, resp.Header.Get("Location"))
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		v.Result = Inconclusive
		v.Reason = status + " (busy; retried)" + because(ans.Reason, data, isVerdict)
		wait = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	case code/100 == 2 && bad != "":
		v.Result = Inconclusive
		v.Reason = status + ", but " + bad
	case code/100 == 2 && isVerdict:
		v.Result = Result(*ans.Verdict)
		v.Reason = status + because(ans.Reason, nil, true)
	case code/100 == 2:
		v.Result = Pass
		v.Reason = status
		if len(data) > maxGateBody {
			v.Reason += fmt.Sprintf(" (a body over %d KiB is not read as a verdict)", maxGateBody>>10)
		}
	default:
		v.Result = Fail
		v.Reason = status + because(ans.Reason, data, isVerdict)
	}
	return v, wait
}

// readAnswer parses a gate's body as {"verdict", "reason"}. isVerdict: it
// is one; bad says why a body that names a verdict names none of the
// three.
func readAnswer(data []byte) (a gateAnswer, isVerdict bool, bad string) {
	if len(data) > maxGateBody || json.Unmarshal(data, &a) != nil || a.Verdict == nil {
		return gateAnswer{}, false, ""
	}
	switch Result(*a.Verdict) {
	case Pass, Fail, Inconclusive:
		return a, true, ""
	}
	return a, false, fmt.Sprintf("its verdict %q is none of pass, fail and inconclusive", clip(*a.Verdict, 40))
}

// because is ": reason" from a verdict body, or the start of a body that
// is not one (what a failing server printed is the best clue there is).
func because(reason string, data []byte, isVerdict bool) string {
	if isVerdict && reason != "" {
		return ": " + clip(reason, 300)
	}
	if s := strings.TrimSpace(string(data)); s != "" && !isVerdict {
		return ": " + clip(s, 200)
	}
	return ""
}

// clip shortens s to n bytes at most, on a rune boundary, as one line.
func clip(s string, n int) string {
	return truncate(strings.Join(strings.Fields(strings.ToValidUTF8(s, "?")), " "), n)
}

// truncate shortens s to n bytes at most, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// retryAfter reads a Retry-After header: seconds or an HTTP date; 0 when
// absent or unreadable.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return t.Sub(now)
	}
	return 0
}
