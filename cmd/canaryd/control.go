package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"canaryd/admin"
	"canaryd/rollout"
)

// adminClient talks to a running canaryd's admin API.
type adminClient struct {
	base   string
	token  string
	output string
	http   *http.Client
}

// adminFlags registers --admin, --token-file and --output, with defaults
// from CANARYD_ADMIN and CANARYD_TOKEN_FILE.
func adminFlags(fs *flag.FlagSet) func() (*adminClient, error) {
	output := fs.String("output", "text", "text or json")
	return adminFlagsWith(fs, output)
}

// adminFlagsWith registers --admin and --token-file; output, when the
// command has no --output, is a fixed "text".
func adminFlagsWith(fs *flag.FlagSet, output *string) func() (*adminClient, error) {
	addr := fs.String("admin", envOr("CANARYD_ADMIN", "127.0.0.1:9901"), "admin address (env CANARYD_ADMIN)")
	tokenFile := fs.String("token-file", os.Getenv("CANARYD_TOKEN_FILE"), "file with the admin bearer token (env CANARYD_TOKEN_FILE)")
	return func() (*adminClient, error) {
		c := &adminClient{base: "http://" + strings.TrimPrefix(*addr, "http://"), output: *output, http: &http.Client{Timeout: 10 * time.Second}}
		if *output != "text" && *output != "json" {
			return nil, fmt.Errorf("--output %q: use text or json", *output)
		}
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return nil, fmt.Errorf("--token-file: %w", err)
			}
			c.token = strings.TrimSpace(string(b))
		}
		return c, nil
	}
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

// do sends a request without a body; see send.
func (c *adminClient) do(method, path string, v any) error { return c.send(method, path, nil, v) }

// send sends a request (a JSON body if any) and decodes a JSON answer into
// v; an error answer becomes one clear line.
func (c *adminClient) send(method, path string, body []byte, v any) error {
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API at %s: %v (is canaryd running? see --admin)", c.base, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (%d)", e.Error, resp.StatusCode)
		}
		return fmt.Errorf("admin API answered %s", resp.Status)
	}
	return json.Unmarshal(data, v)
}

func cmdStatus(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
	client := adminFlags(fs)
	watch := fs.Bool("watch", false, "redraw every --every until Ctrl-C")
	every := fs.Duration("every", 2*time.Second, "refresh interval of --watch")
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
			code := showStatus(c, route, &buf, &buf)
			if tty {
				io.WriteString(stdout, "\033[H\033[2J")
			}
			fmt.Fprintf(stdout, "%s  (every %v, Ctrl-C to stop)\n", time.Now().Format("15:04:05"), *every)
			stdout.Write(buf.Bytes())
			if !tty {
				fmt.Fprintln(stdout)
			}
			_ = code
			select {
			case <-ctx.Done():
				return 0
			case <-time.After(*every):
			}
		}
	}
}

func showStatus(c *adminClient, route string, stdout, stderr io.Writer) int {
	var err error
	var routes []admin.RouteView
	if route != "" {
		var one admin.RouteView
		err = c.do(http.MethodGet, "/api/v1/routes/"+route, &one)
		routes = []admin.RouteView{one}
	} else {
		err = c.do(http.MethodGet, "/api/v1/routes", &routes)
	}
	if err != nil {
		fmt.Fprintln(stderr, "canaryd status:", err)
		return 1
	}
	if c.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(routes)
		return 0
	}
	// In a cluster, who leads and what each member serves come first.
	var cv admin.ClusterView
	if err := c.do(http.MethodGet, "/api/v1/cluster", &cv); err == nil {
		printCluster(stdout, cv)
	}
	for _, r := range routes {
		printRoute(stdout, r)
	}
	return 0
}

// printCluster shows the leader, the members and what each serves: the
// sequence of each route's state it acknowledged, against the latest.
func printCluster(w io.Writer, v admin.ClusterView) {
	conn := "connected"
	switch {
	case v.Partitioned:
		conn = "PARTITIONED (past partition_timeout)"
	case !v.Connected:
		conn = "NOT CONNECTED to etcd"
	}
	leader := v.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(w, "cluster %s: member %s, leader %s, %s, %d members\n", v.Name, v.Member, leader, conn, len(v.Members))
	for _, m := range v.Members {
		var acks []string
		for route, seq := range v.States {
			state := "behind"
			if m.Acked[route] >= seq {
				state = "current"
			}
			acks = append(acks, fmt.Sprintf("%s %s", route, state))
		}
		sort.Strings(acks)
		role := "follower"
		if m.ID == v.Leader {
			role = "leader"
		}
		fmt.Fprintf(w, "  %-20s %-8s %-21s config %s  %s\n", m.ID, role, m.Addr, m.ConfigHash, strings.Join(acks, ", "))
	}
}

func printRoute(w io.Writer, r admin.RouteView) {
	fmt.Fprintf(w, "route %s (%s%s)\n", r.Name, r.Host, r.PathPrefix)
	for _, p := range r.Pools {
		healthy := 0
		for _, in := range p.Instances {
			if in.Healthy {
				healthy++
			}
		}
		bar := strings.Repeat("#", int(p.Weight/5+0.5)) + strings.Repeat(".", 20-int(p.Weight/5+0.5))
		preview := ""
		if p.PreviewRequests > 0 {
			preview = fmt.Sprintf("  %d preview (%d failed)", p.PreviewRequests, p.PreviewErrors)
		}
		// What the pool serves when health has moved its share: a pool at
		// 50% with no healthy instance serves 0%.
		serving := ""
		if p.EffectiveWeight != p.Weight {
			serving = fmt.Sprintf(" serving %.2f%%", p.EffectiveWeight)
		}
		fmt.Fprintf(w, "  %-10s %6.2f%%%s [%s] %d/%d healthy  %5.1f req/s now  last %s: %5.2f%% errors  p99 %.1fms%s\n",
			p.Name, p.Weight, serving, bar, healthy, len(p.Instances), p.RecentRate, span(p.LastMinute.Seconds), 100*p.LastMinute.ErrorRate, p.LastMinute.P99Ms, preview)
	}
	if ro := r.Rollout; ro != nil {
		next := ""
		if !ro.NextAnalysis.IsZero() {
			next = fmt.Sprintf(", next analysis in %v", time.Until(ro.NextAnalysis).Round(time.Second))
		}
		if ro.Shadow {
			fmt.Fprintf(w, "  rollout %s %s → %s: %s, shadow phase: copies of %.2f%% of requests, no live traffic, failures %d/%d%s\n",
				ro.Strategy, ro.Stable, ro.Canary, ro.Phase, ro.ShadowPercent, ro.Failures, ro.FailureLimit, next)
		} else {
			fmt.Fprintf(w, "  rollout %s %s → %s: %s, step %d of %d (canary %.2f%%), failures %d/%d%s\n",
				ro.Strategy, ro.Stable, ro.Canary, ro.Phase, ro.Step, len(ro.Steps), ro.CanaryWeight, ro.Failures, ro.FailureLimit, next)
		}
		if ro.Reason != "" {
			fmt.Fprintf(w, "    %s\n", ro.Reason)
		}
		for _, v := range ro.LastVerdicts {
			result := string(v.Result)
			if v.Advisory {
				result += " (advisory)"
			}
			fmt.Fprintf(w, "    %-13s %-20s %s\n", result, v.Check, v.Reason)
		}
	}
}

// span names the time a reading covers: "1m", or "16s" for a young pool.
func span(seconds float64) string {
	if seconds >= 59.5 {
		return "1m"
	}
	return fmt.Sprintf("%.0fs", seconds)
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
			var st rollout.Status
			if err := c.do(http.MethodPost, "/api/v1/routes/"+route+"/"+action.String(), &st); err != nil {
				// Asking for what already is (pausing a paused rollout) is not a
				// failure: say so, and succeed.
				var rv admin.RouteView
				done, ok := action.Done()
				if ok && c.do(http.MethodGet, "/api/v1/routes/"+route, &rv) == nil && rv.Rollout != nil && rv.Rollout.Phase == done {
					fmt.Fprintf(stdout, "%s: already %s, nothing to do\n", route, rv.Rollout.Phase)
					return 0
				}
				fmt.Fprintf(stderr, "canaryd %s %s: %v\n", action, route, err)
				return 1
			}
			if c.output == "json" {
				json.NewEncoder(stdout).Encode(st)
				return 0
			}
			fmt.Fprintf(stdout, "%s: %s, step %d, canary %.2f%% (%s)\n", route, st.Phase, st.Step, st.CanaryWeight, st.Reason)
			return 0
		}
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
		body, _ := json.Marshal(weights)
		var res admin.WeightsResult
		if err := c.send(http.MethodPut, "/api/v1/routes/"+pos[0]+"/weights", body, &res); err != nil {
			fmt.Fprintf(stderr, "canaryd weight %s: %v\n", pos[0], err)
			return 1
		}
		if c.output == "json" {
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
		resp, err := c.http.Get(c.base + "/readyz")
		if err != nil {
			fmt.Fprintln(stderr, "canaryd healthcheck:", err)
			return 1
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fmt.Fprintln(stderr, "canaryd healthcheck: not ready:", resp.Status)
			return 1
		}
		fmt.Fprintln(stdout, "ready")
		return 0
	}
}
