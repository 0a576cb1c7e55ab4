package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"canaryd/app"
	"canaryd/config"
	"canaryd/metrics"
)

// Every error path of the commands that talk to the admin API, against a
// real canaryd on loopback: the exit code (1 refused or failed, 2 a usage
// error) and a message that names the problem first. `canaryd weight shop
// v3=100` names v3, the pool the route lacks, not v1.
func TestCLIErrorPaths(t *testing.T) {
	dir := t.TempDir()
	adminAddr := freeAddr(t)
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("cli.yaml", []byte(`listen: "127.0.0.1:0"
admin: { listen: "`+adminAddr+`", token_file: "`+token+`" }
state_dir: "`+filepath.Join(dir, "state")+`"
routes:
  - name: shop
    match: { path_prefix: /shop }
    pools:
      - { name: v1, weight: 100, instances: ["127.0.0.1:1"] }
      - { name: v2, weight: 0, instances: ["127.0.0.1:2"] }
  - name: web
    pools:
      - { name: blue, weight: 100, instances: ["127.0.0.1:3"] }
      - { name: green, weight: 0, instances: ["127.0.0.1:4"] }
    rollout: { stable: blue, canary: green }
`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := app.New(cfg, app.Options{Registry: metrics.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-served })
	waitReady(t, adminAddr)

	auth := []string{"--admin", adminAddr, "--token-file", token}
	for _, tc := range []struct {
		name string
		args []string
		code int
		says []string // in stderr, in this order
	}{
		{"an unknown pool is named first", []string{"weight", "shop", "v3=100"}, 1, []string{`no pool "v3"`, "its pools are v1, v2"}},
		{"two unknown pools", []string{"weight", "shop", "v1=50", "x=25", "y=25"}, 1, []string{`no pool "x", "y"`}},
		{"a pool left out", []string{"weight", "shop", "v1=100"}, 1, []string{`no weight for pool "v2"`, "(v1, v2)"}},
		{"weights that do not sum to 100", []string{"weight", "shop", "v1=60", "v2=30"}, 1, []string{"sum to 90%"}},
		{"three decimals", []string{"weight", "shop", "v1=99.995", "v2=0.005"}, 1, []string{"at most two decimals"}},
		{"not POOL=PERCENT", []string{"weight", "shop", "v1:100"}, 2, []string{`"v1:100" is not POOL=PERCENT`}},
		{"not a number", []string{"weight", "shop", "v1=lots"}, 2, []string{`"v1=lots" is not POOL=PERCENT`}},
		{"an unknown route", []string{"weight", "nope", "v1=100"}, 1, []string{"nope"}},
		{"a route with a rollout", []string{"weight", "web", "blue=50", "green=50"}, 1, []string{"has a rollout"}},
		{"promote without a rollout", []string{"promote", "shop"}, 1, []string{"shop"}},
		{"promote an unknown route", []string{"promote", "nope"}, 1, []string{"nope"}},
		{"status of an unknown route", []string{"status", "nope"}, 1, []string{"nope"}},
		{"instances of an unknown pool", []string{"instances", "shop", "v9"}, 1, []string{`route "shop" has no pool "v9"`}},
		{"registering into a listed pool", []string{"instances", "shop", "v1", "--add", "127.0.0.1:9"}, 1, []string{`pool "v1" of route "shop" takes its instances from the file's instances list`, "registered: true"}},
		{"two modes", []string{"instances", "shop", "v1", "--add", "--remove", "127.0.0.1:9"}, 2, []string{"modes; give one"}},
		{"addresses without a mode", []string{"instances", "shop", "v1", "127.0.0.1:9"}, 2, []string{"without a mode", "--set, --add or --remove"}},
		{"add without addresses", []string{"instances", "shop", "v1", "--add"}, 2, []string{"no addresses"}},
		{"a lease on a removal", []string{"instances", "shop", "v1", "--remove", "127.0.0.1:9", "--ttl", "30s"}, 2, []string{"--ttl go with --set or --add"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append(append([]string(nil), tc.args...), auth...), &out, &errb)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, errb.String())
			}
			msg := errb.String()
			at := 0
			for _, want := range tc.says {
				i := strings.Index(msg[at:], want)
				if i < 0 {
					t.Fatalf("stderr lacks %q (in order):\n%s", want, msg)
				}
				at += i + len(want)
			}
		})
	}
	// The same without the token, at an address with nothing, with a
	// token file that is not there, and with an output that is no format.
	for _, tc := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"no token", []string{"weight", "shop", "v1=100", "v2=0", "--admin", adminAddr}, 1, "token"},
		{"nothing at the address", []string{"promote", "shop", "--admin", freeAddr(t)}, 1, "connect"},
		{"a missing token file", []string{"pause", "shop", "--admin", adminAddr, "--token-file", filepath.Join(dir, "none")}, 2, "--token-file"},
		{"an unknown output", []string{"status", "--admin", adminAddr, "--output", "yaml"}, 2, `--output "yaml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.says) {
				t.Errorf("exit %d, want %d; stderr %q lacks %q", code, tc.code, errb.String(), tc.says)
			}
		})
	}
	// And the weights that are right go through.
	var out, errb bytes.Buffer
	if code := run(append([]string{"weight", "shop", "v1=90", "v2=10"}, auth...), &out, &errb); code != 0 || !strings.Contains(out.String(), "version 1") {
		t.Errorf("weight: exit %d, %s %s", code, out.String(), errb.String())
	}
}

// waitReady waits for the admin listener's /readyz.
func waitReady(t *testing.T, adminAddr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var out, errb bytes.Buffer
		if run([]string{"healthcheck", "--admin", adminAddr}, &out, &errb) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("canaryd at %s not ready within 10s", adminAddr)
}
