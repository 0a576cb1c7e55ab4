package config

import (
	"fmt"
	"reflect"
	"strings"
)

// liveSection reports whether a top-level field of Config is applied live
// by a reload. Every other section needs a restart: RestartNeeded derives
// the list from the struct, so a new section is flagged until it is named
// here (and made to reload).
func liveSection(field string) bool { return field == "Routes" || field == "Include" }

// RestartNeeded lists the settings that differ between a running config and
// a new one and that only take effect on restart: every section but the
// routes (listeners, timeouts, upstream tuning, trusted proxies, reload
// tuning, the cluster...).
func RestartNeeded(running, next *Config) []string {
	var diffs []string
	a, b := reflect.ValueOf(running).Elem(), reflect.ValueOf(next).Elem()
	for i, f := range reflect.VisibleFields(a.Type()) {
		if !f.IsExported() || liveSection(f.Name) {
			continue
		}
		diffs = append(diffs, fieldDiffs(yamlName(f), a.Field(i), b.Field(i))...)
	}
	return diffs
}

// yamlName is a field's key in the file.
func yamlName(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if tag == "" || tag == "-" {
		return f.Name
	}
	return tag
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
			out = append(out, fieldDiffs(name+"."+yamlName(f), a.Field(i), b.Field(i))...)
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
