package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"canaryd/admin"
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
	addr := fs.String("admin", envOr("CANARYD_ADMIN", "127.0.0.1:9901"), "admin address (env CANARYD_ADMIN)")
	tokenFile := fs.String("token-file", os.Getenv("CANARYD_TOKEN_FILE"), "file with the admin bearer token (env CANARYD_TOKEN_FILE)")
	output := fs.String("output", "text", "text or json")
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

// do sends a request and decodes a JSON answer into v; an error answer
// becomes one clear line.
func (c *adminClient) do(method, path string, v any) error {
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API at %s: %v (is canaryd running? see --admin)", c.base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (%d)", e.Error, resp.StatusCode)
		}
		return fmt.Errorf("admin API answered %s", resp.Status)
	}
	return json.Unmarshal(body, v)
}

// positional parses flags around one optional positional argument.
func positional(fs *flag.FlagSet, args []string, stderr io.Writer) (string, bool) {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if fs.NArg() == 0 {
		return "", true
	}
	arg := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return "", false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "canaryd %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return "", false
	}
	return arg, true
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	client := adminFlags(fs)
	route, ok := positional(fs, args, stderr)
	if !ok {
		return 2
	}
	c, err := client()
	if err != nil {
		fmt.Fprintln(stderr, "canaryd status:", err)
		return 2
	}
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
	for _, r := range routes {
		printRoute(stdout, r)
	}
	return 0
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
		fmt.Fprintf(w, "  %-10s %6.2f%% [%s] %d/%d healthy  %5.1f req/s  %5.2f%% errors  p99 %.1fms\n",
			p.Name, p.Weight, bar, healthy, len(p.Instances), float64(p.LastMinute.Requests)/60, 100*p.LastMinute.ErrorRate, p.LastMinute.P99Ms)
	}
	if ro := r.Rollout; ro != nil {
		fmt.Fprintf(w, "  rollout %s %s → %s: %s, step %d of %d (canary %.2f%%), failures %d/%d\n",
			ro.Strategy, ro.Stable, ro.Canary, ro.Phase, ro.Step, len(ro.Steps), ro.CanaryWeight, ro.Failures, ro.FailureLimit)
		if ro.Reason != "" {
			fmt.Fprintf(w, "    %s\n", ro.Reason)
		}
		for _, v := range ro.LastVerdicts {
			fmt.Fprintf(w, "    %-13s %-20s %s\n", v.Result, v.Check, v.Reason)
		}
	}
}

// cmdControl runs promote, abort, pause or resume.
func cmdControl(action string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(action, flag.ContinueOnError)
	client := adminFlags(fs)
	route, ok := positional(fs, args, stderr)
	if !ok {
		return 2
	}
	if route == "" {
		fmt.Fprintf(stderr, "canaryd %s: name the route, e.g. canaryd %s web\n", action, action)
		return 2
	}
	c, err := client()
	if err != nil {
		fmt.Fprintf(stderr, "canaryd %s: %v\n", action, err)
		return 2
	}
	var st struct {
		Phase        string  `json:"phase"`
		Step         int     `json:"step"`
		CanaryWeight float64 `json:"canary_weight"`
		Reason       string  `json:"reason"`
	}
	if err := c.do(http.MethodPost, "/api/v1/routes/"+route+"/"+action, &st); err != nil {
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
