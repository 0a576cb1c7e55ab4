package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"canaryd/adminclient"
	"canaryd/rollout"
)

// The exit codes of status --wait (docs/cli.md); the other commands keep
// theirs.
const (
	waitPromoted    = 0 // the rollout promoted
	waitRolledBack  = 1 // it rolled back
	waitUsage       = 2 // a usage error, an unknown route, a route without a rollout
	waitUndecided   = 3 // the timeout passed with it under way, paused or waiting
	waitUnreachable = 4 // canaryd cannot be reached, or refuses the token
)

// waitGrace is how long --wait goes on asking a canaryd that stopped
// answering after it answered once: a restart takes less, and the rollout
// resumes from its saved state.
const waitGrace = 30 * time.Second

// transition is one line of --wait's output: what changed.
type transition struct {
	Time         time.Time     `json:"time"`
	Route        string        `json:"route"`
	Phase        rollout.Phase `json:"phase"`
	Step         int           `json:"step"`
	Steps        int           `json:"steps"`
	CanaryWeight float64       `json:"canary_weight"`
	Reason       string        `json:"reason,omitempty"`
}

// key is what makes a new line: the phase, the step and the canary's
// weight (a reason alone changes with every analysis).
func (t transition) key() string {
	return fmt.Sprintf("%s/%d/%g", t.Phase, t.Step, t.CanaryWeight)
}

func (t transition) write(w io.Writer, asJSON bool) {
	if asJSON {
		json.NewEncoder(w).Encode(t)
		return
	}
	line := fmt.Sprintf("%s %s: %s", t.Time.Format("15:04:05"), t.Route, t.Phase)
	if t.Steps > 0 {
		line += fmt.Sprintf(", step %d of %d (canary %.2f%%)", t.Step, t.Steps, t.CanaryWeight)
	}
	if t.Reason != "" {
		line += ": " + t.Reason
	}
	fmt.Fprintln(w, line)
}

// waitFor follows route's rollout until it promotes or rolls back, or
// until timeout, printing one line per transition, and returns the exit
// code. every is the polling interval.
func waitFor(ctx context.Context, c adminTarget, route string, timeout, every time.Duration, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last transition
	var answered time.Time // the last answer; zero before the first
	for {
		rv, err := c.Route(route)
		var apiErr *adminclient.Error
		switch {
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
			fmt.Fprintf(stderr, "canaryd status: no route %q (canaryd status lists them)\n", route)
			return waitUsage
		case errors.As(err, &apiErr) && (apiErr.Status == http.StatusUnauthorized || apiErr.Status == http.StatusForbidden):
			fmt.Fprintf(stderr, "canaryd status: the admin API refused the token: %v (check --token-file against admin.token_file)\n", err)
			return waitUnreachable
		case err != nil && apiErr == nil:
			// Not an answer: unreachable. At once before the first
			// answer; after one, only once it lasts past the grace.
			if answered.IsZero() || time.Since(answered) > waitGrace {
				fmt.Fprintln(stderr, "canaryd status:", err) // it says where it asked and what to check
				return waitUnreachable
			}
		case err != nil:
			answered = time.Now() // an error answer (a 5xx): it is there; ask again
		case rv.Rollout == nil:
			fmt.Fprintf(stderr, "canaryd status: route %q has no rollout to wait for (routes[].rollout in the config)\n", route)
			return waitUsage
		default:
			answered = time.Now()
			ro := rv.Rollout
			now := transition{Time: answered, Route: route, Phase: ro.Phase, Step: ro.Step, Steps: len(ro.Steps), CanaryWeight: ro.CanaryWeight, Reason: ro.Reason}
			if now.key() != last.key() {
				now.write(stdout, c.json)
				last = now
			}
			switch ro.Phase {
			case rollout.Promoted:
				return waitPromoted
			case rollout.RolledBack:
				return waitRolledBack
			}
		}
		select {
		case <-ctx.Done():
			phase := "no answer yet"
			if last.Phase != "" {
				phase = string(last.Phase)
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				fmt.Fprintf(stderr, "canaryd status: %s: not decided after %v (%s); a longer --timeout waits longer\n", route, timeout, phase)
			} else {
				fmt.Fprintf(stderr, "canaryd status: %s: interrupted before a decision (%s)\n", route, phase)
			}
			return waitUndecided
		case <-time.After(every):
		}
	}
}
