package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"canaryd/admin"
	"canaryd/adminclient"
	"canaryd/rollout"
)

// adminTarget is the admin API a command talks to, and how it prints.
type adminTarget struct {
	*adminclient.Client
	json bool // --output json
}

// adminFlags registers --admin, --token-file and --output, with defaults
// from CANARYD_ADMIN and CANARYD_TOKEN_FILE.
func adminFlags(fs *flag.FlagSet) func() (adminTarget, error) {
	output := fs.String("output", "text", "text or json")
	return adminFlagsWith(fs, output)
}

// adminFlagsWith registers --admin and --token-file; output, when the
// command has no --output, is a fixed "text".
func adminFlagsWith(fs *flag.FlagSet, output *string) func() (adminTarget, error) {
	addr := fs.String("admin", envOr("CANARYD_ADMIN", "127.0.0.1:9901"), "admin address (env CANARYD_ADMIN)")
	tokenFile := fs.String("token-file", os.Getenv("CANARYD_TOKEN_FILE"), "file with the admin bearer token (env CANARYD_TOKEN_FILE)")
	return func() (adminTarget, error) {
		if *output != "text" && *output != "json" {
			return adminTarget{}, fmt.Errorf("--output %q: use text or json", *output)
		}
		token := ""
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return adminTarget{}, fmt.Errorf("--token-file: %w", err)
			}
			token = strings.TrimSpace(string(b))
		}
		return adminTarget{Client: adminclient.New(*addr, token), json: *output == "json"}, nil
	}
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func cmdStatus(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
	client := adminFlags(fs)
	watch := fs.Bool("watch", false, "redraw every --every until Ctrl-C")
	every := fs.Duration("every", 2*time.Second, "refresh interval of --watch and --wait")
	wait := fs.Bool("wait", false, "wait for ROUTE's rollout to decide: exit 0 promoted, 1 rolled back, 3 undecided at --timeout, 4 canaryd unreachable")
	timeout := fs.Duration("timeout", 30*time.Minute, "how long --wait waits")
	return func(args []string) int {
		route := ""
		if len(args) == 1 {
			route = args[0]
		}
		c, err := client()
		if err != nil {
			fmt.Fprintln(stderr, "canaryd status:", err)
			return 2
		}
		if *wait {
			switch {
			case route == "":
				fmt.Fprintln(stderr, "canaryd status: --wait needs a route; usage: canaryd status ROUTE --wait [--timeout 30m]")
				return waitUsage
			case *watch:
				fmt.Fprintln(stderr, "canaryd status: --wait and --watch do not go together; pick one")
				return waitUsage
			case *timeout <= 0 || *every <= 0:
				fmt.Fprintln(stderr, "canaryd status: --timeout and --every must be above 0")
				return waitUsage
			}
			ctx, stop := signalContext()
			defer stop()
			return waitFor(ctx, c, route, *timeout, *every, stdout, stderr)
		}
		if !*watch {
			return showStatus(c, route, stdout, stderr)
		}
		// On a terminal, redraw in place; otherwise print one block per tick.
		tty := false
		if f, ok := stdout.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				tty = true
			}
		}
		ctx, stop := signalContext()
		defer stop()
		for {
			var buf bytes.Buffer
			showStatus(c, route, &buf, &buf) // an error is shown in the block
			if tty {
				io.WriteString(stdout, "\033[H\033[2J")
			}
			fmt.Fprintf(stdout, "%s  (every %v, Ctrl-C to stop)\n", time.Now().Format("15:04:05"), *every)
			stdout.Write(buf.Bytes())
			if !tty {
				fmt.Fprintln(stdout)
			}
			select {
			case <-ctx.Done():
				return 0
			case <-time.After(*every):
			}
		}
	}
}

func showStatus(c adminTarget, route string, stdout, stderr io.Writer) int {
	var routes []admin.RouteView
	var err error
	if route != "" {
		var one admin.RouteView
		one, err = c.Route(route)
		routes = []admin.RouteView{one}
	} else {
		routes, err = c.Routes()
	}
	if err != nil {
		fmt.Fprintln(stderr, "canaryd status:", err)
		return 1
	}
	if c.json {
		printJSON(stdout, routes)
		return 0
	}
	// In a cluster, who leads and what each member serves come first.
	if cv, err := c.Cluster(); err == nil {
		adminclient.WriteCluster(stdout, cv)
	}
	for _, r := range routes {
		adminclient.WriteRoute(stdout, r)
	}
	return 0
}

// cmdControl runs promote, abort, pause or resume.
func cmdControl(action rollout.Action) func(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
	return func(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
		client := adminFlags(fs)
		return func(args []string) int {
			route := args[0]
			c, err := client()
			if err != nil {
				fmt.Fprintf(stderr, "canaryd %s: %v\n", action, err)
				return 2
			}
			st, err := c.Control(route, action)
			if err != nil {
				// Asking for what already is (pausing a paused rollout) is not a
				// failure: say so, and succeed.
				done, ok := action.Done()
				if rv, gerr := c.Route(route); ok && gerr == nil && rv.Rollout != nil && rv.Rollout.Phase == done {
					fmt.Fprintf(stdout, "%s: already %s, nothing to do\n", route, rv.Rollout.Phase)
					return 0
				}
				fmt.Fprintf(stderr, "canaryd %s %s: %v\n", action, route, err)
				return 1
			}
			if c.json {
				json.NewEncoder(stdout).Encode(st)
				return 0
			}
			fmt.Fprintf(stdout, "%s: %s, step %d, canary %.2f%% (%s)\n", route, st.Phase, st.Step, st.CanaryWeight, st.Reason)
			return 0
		}
	}
}

// cmdApprove gives the go-ahead to a rollout's pending approval gate.
func cmdApprove(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
	client := adminFlags(fs)
	gate := fs.String("gate", "", "the approval gate (needed when several are pending)")
	by := fs.String("by", os.Getenv("USER"), "who approves (default $USER)")
	reason := fs.String("reason", "", "why, for the history")
	return func(args []string) int {
		route := args[0]
		c, err := client()
		if err != nil {
			fmt.Fprintln(stderr, "canaryd approve:", err)
			return 2
		}
		st, err := c.Approve(route, admin.ApproveRequest{Gate: *gate, By: *by, Reason: *reason, Source: rollout.SourceCLI})
		if err != nil {
			fmt.Fprintf(stderr, "canaryd approve %s: %v\n", route, err)
			return 1
		}
		if c.json {
			json.NewEncoder(stdout).Encode(st)
			return 0
		}
		fmt.Fprintf(stdout, "%s: approved; %s, step %d, canary %.2f%% (%s)\n", route, st.Phase, st.Step, st.CanaryWeight, st.Reason)
		return 0
	}
}

// cmdWeight sets a route's weights by hand: canaryd weight web blue=90 green=10.
func cmdWeight(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
	client := adminFlags(fs)
	return func(pos []string) int {
		weights := map[string]float64{}
		for _, kv := range pos[1:] {
			k, v, ok := strings.Cut(kv, "=")
			f, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
			if !ok || k == "" || err != nil {
				fmt.Fprintf(stderr, "canaryd weight: %q is not POOL=PERCENT\n", kv)
				return 2
			}
			weights[k] = f
		}
		c, err := client()
		if err != nil {
			fmt.Fprintln(stderr, "canaryd weight:", err)
			return 2
		}
		res, err := c.SetWeights(pos[0], weights)
		if err != nil {
			fmt.Fprintf(stderr, "canaryd weight %s: %v\n", pos[0], err)
			return 1
		}
		if c.json {
			json.NewEncoder(stdout).Encode(res)
			return 0
		}
		fmt.Fprintf(stdout, "%s: weights %s (version %d)\n", res.Route, strings.Join(pos[1:], " "), res.Version)
		return 0
	}
}

// cmdHealthcheck exits 0 when the admin /readyz says ready (for Docker's
// HEALTHCHECK), 1 otherwise.
func cmdHealthcheck(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
	text := "text"
	client := adminFlagsWith(fs, &text)
	return func([]string) int {
		c, err := client()
		if err != nil {
			fmt.Fprintln(stderr, "canaryd healthcheck:", err)
			return 2
		}
		if err := c.Ready(); err != nil {
			fmt.Fprintln(stderr, "canaryd healthcheck:", err)
			return 1
		}
		fmt.Fprintln(stdout, "ready")
		return 0
	}
}
