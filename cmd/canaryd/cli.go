package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"runtime"
	"strings"

	"canaryd/rollout"

	"github.com/spf13/cobra"
)

// A command's flags are declared on a Go flag.FlagSet (by its cmdX
// function, which returns the body to run once they are parsed) and handed
// to cobra, which parses them, prints help with usage lines and examples,
// and completes them.
type define func(fs *flag.FlagSet, stdout, stderr io.Writer) func(args []string) int

// exitCode carries a command's exit status out of cobra.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// usageError is a command line cobra refused (unknown flag, wrong
// arguments): exit 2.
type usageError struct{ error }

func command(c *cobra.Command, def define, stdout, stderr io.Writer) *cobra.Command {
	fs := flag.NewFlagSet(c.Name(), flag.ContinueOnError)
	body := def(fs, stdout, stderr)
	c.Flags().AddGoFlagSet(fs)
	c.RunE = func(_ *cobra.Command, args []string) error {
		if code := body(args); code != 0 {
			return exitCode(code)
		}
		return nil
	}
	return c
}

// args wraps a cobra argument check so that its failure is a usage error
// that says what to write.
func args(check cobra.PositionalArgs, want string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usageError{fmt.Errorf("%v; usage: %s", err, want)}
		}
		return nil
	}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "canaryd",
		Short: "canaryd: a self-hosted canary router",
		Long: `canaryd: a self-hosted canary router. It splits live traffic between pools of
instances by weight, follows config edits, watches health, and promotes or
rolls back a release by itself.`,
		Example: `  canaryd demo                          # demo pools, proxy, load and a rollout
  canaryd run --config config.yaml      # serve
  canaryd validate my-config.yaml       # check a file, every problem with its line
  canaryd status --watch                # routes, weights, health, rollouts`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(stderr)
			cmd.Help()
			return exitCode(2) // no command: a usage error
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.Version = buildVersion()
	root.SetVersionTemplate(fmt.Sprintf("canaryd %s %s %s/%s\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH))
	root.Flags().BoolP("version", "v", false, "print the version")

	admin := `

The commands that talk to a running canaryd read --admin (env CANARYD_ADMIN,
default 127.0.0.1:9901) and --token-file (env CANARYD_TOKEN_FILE).`
	root.AddCommand(
		command(&cobra.Command{Use: "run", Short: "Serve the proxy on a config file",
			Long:    "Serve the proxy on a config file, reloading it when it changes (and on SIGHUP). SIGTERM drains.",
			Example: "  canaryd run --config /etc/canaryd/config.yaml --log-format console",
			Args:    args(cobra.NoArgs, "canaryd run [--config FILE]")}, cmdRun, stdout, stderr),
		command(&cobra.Command{Use: "validate [FILE]", Short: "Check a config file and print every problem",
			Long:    "Check a config file (the argument, else --config) and print every problem with its line and what to do. Exit 1 when it is invalid.",
			Example: "  canaryd validate my-config.yaml\n  canaryd validate --config config.yaml",
			Args:    args(cobra.MaximumNArgs(1), "canaryd validate [FILE]")}, cmdValidate, stdout, stderr),
		command(&cobra.Command{Use: "demo", Short: "Demo pools, the proxy, load and a rollout, on the shipped config",
			Example: "  canaryd demo\n  canaryd demo --canary-errors 0.2     # watch it roll back\n  canaryd demo --listen 127.0.0.1:18080 --admin 127.0.0.1:19901 --backend-port 19001",
			Args:    args(cobra.NoArgs, "canaryd demo [flags]")}, cmdDemo, stdout, stderr),
		command(&cobra.Command{Use: "backend", Short: "One demo backend instance",
			Example: "  canaryd backend --listen 127.0.0.1:9001 --pool blue --error-rate 0.01",
			Args:    args(cobra.NoArgs, "canaryd backend --listen ADDR --pool NAME")}, cmdBackend, stdout, stderr),
		command(&cobra.Command{Use: "load", Short: "Steady demo traffic, printing the split it sees",
			Example: "  canaryd load --url http://127.0.0.1:8080/ --rate 100",
			Args:    args(cobra.NoArgs, "canaryd load --url URL [--rate N]")}, cmdLoad, stdout, stderr),
		command(&cobra.Command{Use: "status [ROUTE]", Short: "Routes, weights, health and rollouts (admin API)",
			Long:    "Show every route, or one: pools with their weights, health and traffic, and the rollout." + admin,
			Example: "  canaryd status\n  canaryd status web --watch\n  canaryd status web --wait --timeout 30m   # in CI: exit 0 promoted, 1 rolled back\n  canaryd status --output json",
			Args:    args(cobra.MaximumNArgs(1), "canaryd status [ROUTE]")}, cmdStatus, stdout, stderr),
		command(&cobra.Command{Use: "weight ROUTE POOL=PERCENT...", Short: "Set a route's weights by hand (admin API)",
			Long:    "Set a route's weights by hand; they sum to 100 (see docs/admin-api.md for how long they hold)." + admin,
			Example: "  canaryd weight web blue=90 green=10",
			Args:    args(cobra.MinimumNArgs(2), "canaryd weight ROUTE POOL=PERCENT... (e.g. canaryd weight web blue=90 green=10)")}, cmdWeight, stdout, stderr),
		command(&cobra.Command{Use: "instances ROUTE POOL [--set|--add|--remove ADDR...]", Short: "List a pool's instances, or register and deregister them (admin API)",
			Long: "List a pool's instances with their version, source and lease; with --set, --add or --remove, change a registered pool's set " +
				"(pools[].registered: true; see docs/discovery.md)." + admin,
			Example: "  canaryd instances web green\n  canaryd instances web green --set 10.0.0.5:8080 10.0.0.6:8080 --version v2.4.0 --ttl 30s\n" +
				"  canaryd instances web green --add 10.0.0.7:8080 --ttl 30s     # also the heartbeat\n  canaryd instances web green --remove 10.0.0.5:8080",
			Args: args(cobra.MinimumNArgs(2), "canaryd instances ROUTE POOL [--set|--add|--remove ADDR...] [--version V] [--ttl D]")}, cmdInstances, stdout, stderr),
		command(&cobra.Command{Use: "approve ROUTE [--gate NAME] [--by NAME] [--reason TEXT]", Short: "Approve a rollout's pending approval gate (admin API)",
			Long: "Give the go-ahead a rollout's approval gate (rollout.gates[].kind: approval) waits for; who, from where, when and why go into its history. " +
				"--gate is needed when several approvals are pending; --by defaults to $USER." + admin,
			Example: "  canaryd approve web\n  canaryd approve web --gate sign-off --by alice --reason \"dashboards fine for 30 min\"",
			Args:    args(cobra.ExactArgs(1), "canaryd approve ROUTE [--gate NAME] [--by NAME] [--reason TEXT]")}, cmdApprove, stdout, stderr),
		command(&cobra.Command{Use: "healthcheck", Short: "Exit 0 when canaryd's /readyz says ready",
			Long:    "Exit 0 when the admin listener's /readyz says ready, 1 otherwise: a container HEALTHCHECK." + admin,
			Example: "  canaryd healthcheck --admin 127.0.0.1:9901",
			Args:    args(cobra.NoArgs, "canaryd healthcheck [--admin ADDR]")}, cmdHealthcheck, stdout, stderr),
		&cobra.Command{Use: "version", Short: "Print the version, Go version and platform", Args: args(cobra.NoArgs, "canaryd version"),
			Run: func(*cobra.Command, []string) {
				fmt.Fprintf(stdout, "canaryd %s %s %s/%s\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			}},
	)
	what := map[rollout.Action]string{
		rollout.Promote: "Promote the rollout's canary to 100% now",
		rollout.Abort:   "Roll the rollout back: stable to 100%",
		rollout.Pause:   "Pause the rollout at its step (already paused: nothing to do)",
		rollout.Resume:  "Resume a paused rollout, or retry a rolled-back release from its first step",
	}
	for _, a := range rollout.Actions {
		name := a.String()
		root.AddCommand(command(&cobra.Command{Use: name + " ROUTE", Short: what[a] + " (admin API)", Long: what[a] + "." + admin,
			Example: "  canaryd " + name + " web",
			Args:    args(cobra.ExactArgs(1), "canaryd "+name+" ROUTE (e.g. canaryd "+name+" web)")}, cmdControl(a), stdout, stderr))
	}
	return root
}

// singleDash is a long flag written with one dash (-config), which Go's
// flag package took; pflag takes it as a row of one-letter flags.
var singleDash = regexp.MustCompile(`^-[a-z][a-z-]+(=.*)?$`)

// run returns the exit code: 0 ok, 1 failure, 2 usage error.
func run(argv []string, stdout, stderr io.Writer) int {
	for i, a := range argv {
		if a == "--" {
			break
		}
		if singleDash.MatchString(a) {
			argv[i] = "-" + a
		}
	}
	root := newRoot(stdout, stderr)
	root.SetArgs(argv)
	err := root.Execute()
	var code exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
	}
	// cobra's own refusals (an unknown command or flag, wrong arguments)
	// are usage errors.
	msg := err.Error()
	if cmd, _, ferr := root.Find(argv); ferr == nil && cmd != root {
		fmt.Fprintf(stderr, "canaryd %s: %s\nRun 'canaryd %s --help' for usage.\n", cmd.Name(), msg, cmd.Name())
	} else {
		fmt.Fprintf(stderr, "canaryd: %s\nRun 'canaryd --help' for usage.\n", strings.TrimPrefix(msg, "Error: "))
	}
	return 2
}
