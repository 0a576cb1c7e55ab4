package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"canaryd/admin"
)

// cmdInstances lists a pool's instances, or changes a registered pool's
// set: --set replaces it, --add adds (or renews), --remove deregisters;
// the addresses are the positional arguments after ROUTE POOL.
func cmdInstances(fs *flag.FlagSet, stdout, stderr io.Writer) func([]string) int {
	client := adminFlags(fs)
	set := fs.Bool("set", false, "replace the pool's registered set with ADDR... (none: empty it)")
	add := fs.Bool("add", false, "register ADDR... into the pool, or renew their lease (a heartbeat)")
	remove := fs.Bool("remove", false, "deregister ADDR... (each drains: its requests in flight finish)")
	version := fs.String("version", "", "version the instances run (--set, --add)")
	ttl := fs.String("ttl", "", "lease (2s to 24h): without a renewal within it, a registration expires; default none")
	return func(pos []string) int {
		route, pool, addrs := pos[0], pos[1], pos[2:]
		modes := 0
		for _, m := range []bool{*set, *add, *remove} {
			if m {
				modes++
			}
		}
		switch {
		case modes > 1:
			fmt.Fprintln(stderr, "canaryd instances: --set, --add and --remove are modes; give one")
			return 2
		case modes == 0 && len(addrs) > 0:
			fmt.Fprintf(stderr, "canaryd instances: addresses %s given without a mode; add --set, --add or --remove\n", strings.Join(addrs, " "))
			return 2
		case (*add || *remove) && len(addrs) == 0:
			fmt.Fprintln(stderr, "canaryd instances: no addresses; usage: canaryd instances ROUTE POOL --add|--remove ADDR...")
			return 2
		case *remove && (*version != "" || *ttl != ""):
			fmt.Fprintln(stderr, "canaryd instances: --version and --ttl go with --set or --add, not --remove")
			return 2
		}
		c, err := client()
		if err != nil {
			fmt.Fprintln(stderr, "canaryd instances:", err)
			return 2
		}
		var v admin.InstancesView
		switch {
		case *set || *add:
			v, err = c.Register(route, pool, *set, admin.InstancesRequest{Version: *version, Instances: append([]string{}, addrs...), TTL: *ttl})
		case *remove:
			for _, a := range addrs {
				if v, err = c.Deregister(route, pool, a); err != nil {
					break
				}
			}
		default:
			v, err = c.Instances(route, pool)
		}
		if err != nil {
			fmt.Fprintf(stderr, "canaryd instances %s %s: %v\n", route, pool, err)
			return 1
		}
		if c.json {
			printJSON(stdout, v)
			return 0
		}
		printInstances(stdout, v)
		return 0
	}
}

// printInstances is the text form of a pool's instances.
func printInstances(w io.Writer, v admin.InstancesView) {
	version := ""
	if v.Version != "" {
		version = ", version " + v.Version
	}
	fmt.Fprintf(w, "%s/%s: %d instances from %s%s\n", v.Route, v.Pool, len(v.Instances), v.Source, version)
	if len(v.Instances) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  INSTANCE\tVERSION\tSTATE\tLEASE\tFROM")
	for _, in := range v.Instances {
		state := "not served yet"
		if in.Healthy != nil {
			state = "out of rotation"
			if *in.Healthy {
				state = "in rotation"
			}
		}
		lease := "none"
		if !in.Expires.IsZero() {
			lease = fmt.Sprintf("%s, %s left", in.TTL, time.Until(in.Expires).Round(100*time.Millisecond))
		}
		ver := in.Version
		if ver == "" {
			ver = "-"
		}
		from := in.From
		if from == "" {
			from = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", in.Addr, ver, state, lease, from)
	}
	tw.Flush()
}
