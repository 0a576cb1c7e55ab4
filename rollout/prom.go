package rollout

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"canaryd/config"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// promChecker runs a rollout's PromQL checks.
type promChecker struct {
	api     v1.API
	timeout time.Duration
}

func newPromChecker(pa *config.PrometheusAnalysis) (*promChecker, error) {
	c, err := api.NewClient(api.Config{Address: pa.URL})
	if err != nil {
		return nil, fmt.Errorf("prometheus %s: %w", pa.URL, err)
	}
	return &promChecker{api: v1.NewAPI(c), timeout: pa.Timeout.D()}, nil
}

// promDuration writes d as a PromQL duration, whole seconds, at least 1s.
func promDuration(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return fmt.Sprintf("%ds", s)
}

// expand fills a query's template variables.
func expand(q, route, stable, canary string, sinceStep time.Duration) string {
	return strings.NewReplacer(
		"{{route}}", route, "{{stable}}", stable, "{{canary}}", canary,
		"{{interval}}", promDuration(sinceStep),
	).Replace(q)
}

// run judges each check. An empty result, a query error or a timeout is
// inconclusive, never a pass and never a failure.
func (p *promChecker) run(ctx context.Context, checks []config.PromCheck, route, stable, canary string, sinceStep time.Duration) []Verdict {
	out := make([]Verdict, 0, len(checks))
	for _, c := range checks {
		q := expand(c.Query, route, stable, canary, sinceStep)
		v := Verdict{Check: "prometheus:" + c.Name, Result: Inconclusive}
		val, why := p.query(ctx, q)
		if why != "" {
			v.Reason = why + " (query: " + q + ")"
			out = append(out, v)
			continue
		}
		v.bounded(c.Name, val, c.Min, c.Max)
		out = append(out, v)
	}
	return out
}

// bounded judges a number against its bounds (at least one is set): pass
// within them, fail outside.
func (v *Verdict) bounded(name string, val float64, lo, hi *float64) {
	v.Value, v.Result = val, Pass
	var bounds []string
	if lo != nil {
		bounds = append(bounds, fmt.Sprintf("min %g", *lo))
		v.Threshold = *lo
		if val < *lo {
			v.Result = Fail
		}
	}
	if hi != nil {
		bounds = append(bounds, fmt.Sprintf("max %g", *hi))
		v.Threshold = *hi
		if val > *hi {
			v.Result = Fail
		}
	}
	v.Reason = fmt.Sprintf("%s = %g (%s)", name, val, strings.Join(bounds, ", "))
}

func (p *promChecker) query(ctx context.Context, q string) (float64, string) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	res, _, _, err := p.api.Query(ctx, q, time.Now())
	if err != nil {
		return 0, "query failed: " + err.Error()
	}
	var val float64
	switch r := res.(type) {
	case model.Vector:
		switch len(r) {
		case 0:
			return 0, "no data: the query returned an empty result"
		case 1:
			val = float64(r[0].Value)
		default:
			return 0, fmt.Sprintf("the query returned %d series; aggregate it to one (sum, max...)", len(r))
		}
	case *model.Scalar:
		val = float64(r.Value)
	default:
		return 0, fmt.Sprintf("the query returned a %s; it must return one number", res.Type())
	}
	if math.IsNaN(val) || math.IsInf(val, 0) {
		return 0, fmt.Sprintf("no data: the query returned %g (a rate over no requests?)", val)
	}
	return val, ""
}
