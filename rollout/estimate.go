package rollout

import (
	"fmt"
	"math"
	"time"
)

// Estimate is how far a holding step is from a decision, at the rate its
// canary requests come in, if what its checks have seen so far holds.
type Estimate struct {
	// Requests: about this many more canary requests.
	Requests int `json:"requests"`
	// Seconds until then at the current rate, rounded up to the next
	// analysis; 0 when the rate is unknown.
	Seconds float64 `json:"seconds,omitempty"`
	// Text says both for a person: "about 240 more canary requests, ~3m".
	Text string `json:"text"`
}

// estimate reads the gathering verdicts' More: the step decides when the
// slowest of them does. span is the time the evidence covers, interval the
// time between analyses. nil when no verdict can tell.
func estimate(vs []Verdict, span, interval time.Duration) *Estimate {
	var more, n float64
	for _, v := range vs {
		if v.Check == "min_requests" {
			n = v.Value
		}
		if v.Gathering && !v.Advisory && v.More > more {
			more = v.More
		}
	}
	if more <= 0 {
		return nil
	}
	e := &Estimate{Requests: int(math.Ceil(more))}
	e.Text = fmt.Sprintf("about %d more canary requests", e.Requests)
	if n > 0 && span > 0 {
		at := time.Duration(more / (n / span.Seconds()) * float64(time.Second))
		// The next analysis after they are in decides.
		at = time.Duration(math.Ceil(float64(at)/float64(interval))) * interval
		e.Seconds = at.Seconds()
		e.Text += ", ~" + roughly(at)
	}
	return e
}

// roughly prints a duration as a person estimates one: 40s, 3m, 2h.
func roughly(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(math.Ceil(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(math.Round(d.Minutes())))
	}
	return fmt.Sprintf("%.1fh", d.Hours())
}
