package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// Every key of the file is documented: each yaml name appears in docs/
// in backquotes (alone, or as the end of a dotted key). docs/config.md is
// the reference; the rollout, cluster and discovery blocks have their own
// pages.
func TestEveryKeyIsDocumented(t *testing.T) {
	var doc []byte
	for _, f := range []string{"config.md", "rollouts.md", "cluster.md", "discovery.md", "tls.md", "health.md"} {
		b, err := os.ReadFile("../docs/" + f)
		if err != nil {
			t.Fatal(err)
		}
		doc = append(doc, b...)
	}
	seen := map[reflect.Type]bool{}
	var walk func(path string, typ reflect.Type)
	walk = func(path string, typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] || typ.PkgPath() != reflect.TypeFor[Config]().PkgPath() {
			return
		}
		seen[typ] = true
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name := yamlName(f)
			if !f.IsExported() || name == "-" || name == f.Name {
				continue
			}
			key := strings.TrimPrefix(path+"."+name, ".")
			found := false
			for _, form := range []string{"`" + name + "`", "." + name + "`", "`" + name + ".", "." + name + ".", "`" + name + "[]", "." + name + "[]", "`" + name + ":", " " + name + ": "} {
				found = found || strings.Contains(string(doc), form)
			}
			if !found {
				t.Errorf("%s is in no page of docs/ (config.md is the reference)", key)
			}
			walk(key, f.Type)
		}
	}
	walk("", reflect.TypeFor[Config]())
}
