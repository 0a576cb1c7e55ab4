package config

import (
	"fmt"
	"reflect"
	"strings"
)

// RestartNeeded lists the settings that differ between a running config and
// a new one and that only take effect on restart: listeners, timeouts,
// upstream tuning, trusted proxies, reload tuning. Routes reload live.
func RestartNeeded(running, next *Config) []string {
	var diffs []string
	check := func(name string, a, b any) {
		diffs = append(diffs, fieldDiffs(name, reflect.ValueOf(a), reflect.ValueOf(b))...)
	}
	check("listen", running.Listen, next.Listen)
	check("admin", running.Admin, next.Admin)
	check("server", running.Server, next.Server)
	check("upstream", running.Upstream, next.Upstream)
	check("tls", running.TLS, next.TLS)
	check("grpc", running.GRPC, next.GRPC)
	check("trusted_proxies", running.TrustedProxies, next.TrustedProxies)
	check("reload", running.Reload, next.Reload)
	check("access_log", running.AccessLog, next.AccessLog)
	check("state_dir", running.StateDir, next.StateDir)
	check("cluster", running.Cluster, next.Cluster)
	return diffs
}

// fieldDiffs names each setting that differs between a and b by its YAML
// path, with both values ("upstream.fast_path (true → false)"), descending
// into blocks and through pointers.
func fieldDiffs(name string, a, b reflect.Value) []string {
	for a.Kind() == reflect.Pointer && b.Kind() == reflect.Pointer && !a.IsNil() && !b.IsNil() {
		a, b = a.Elem(), b.Elem()
	}
	if a.Kind() == reflect.Struct && a.Type() == b.Type() {
		var out []string
		for i := 0; i < a.NumField(); i++ {
			f := a.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" {
				tag = f.Name
			}
			out = append(out, fieldDiffs(name+"."+tag, a.Field(i), b.Field(i))...)
		}
		return out
	}
	if reflect.DeepEqual(a.Interface(), b.Interface()) {
		return nil
	}
	return []string{fmt.Sprintf("%s (%v → %v)", name, a.Interface(), b.Interface())}
}

// validator walks a defaulted Config next to its YAML tree so that every
// problem can name the line it comes from.
