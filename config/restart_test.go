package config

import (
	"reflect"
	"strings"
	"testing"
)

// Every top-level section of the config is either reloaded live (the
// routes) or flagged as needing a restart when it changes. The list is
// derived from the struct (RestartNeeded); this test holds an edit for
// every section, found by reflection, so that a new section fails here
// until someone writes its edit and sees which way it goes.
func TestEverySectionReloadsOrNeedsARestart(t *testing.T) {
	edits := map[string]string{
		"listen":          `listen: ":8081"`,
		"admin":           `admin: { listen: "127.0.0.1:9902" }`,
		"state_dir":       `state_dir: /tmp/elsewhere`,
		"server":          `server: { drain_timeout: 5s }`,
		"tls":             `tls: { min_version: "1.3" }`,
		"upstream":        `upstream: { dial_timeout: 3s }`,
		"grpc":            `grpc: { error_codes: [INTERNAL] }`,
		"trusted_proxies": `trusted_proxies: ["10.0.0.0/8"]`,
		"reload":          `reload: { debounce: 1s }`,
		"access_log":      `access_log: { enabled: true }`,
		"cluster":         "cluster: { name: edge }",
		"routes":          "", // the routes below, with other weights
	}
	routes := `routes:
  - name: web
    pools:
      - { name: blue, weight: %s, instances: ["127.0.0.1:9001"] }
      - { name: green, weight: %s, instances: ["127.0.0.1:9002"] }
`
	withRoutes := func(t *testing.T, head, blue, green string) *Config {
		t.Helper()
		cfg, err := Parse("t.yaml", []byte(head+"\n"+sprintf2(routes, blue, green)))
		if err != nil {
			t.Fatalf("%s: %v", head, err)
		}
		return cfg
	}
	base := withRoutes(t, "", "90", "10")
	for _, f := range reflect.VisibleFields(reflect.TypeFor[Config]()) {
		if !f.IsExported() {
			continue
		}
		key := yamlName(f)
		edit, ok := edits[key]
		if !ok {
			t.Errorf("section %s: no edit in this test; decide whether it reloads live (liveSection) or needs a restart, and add an edit here", key)
			continue
		}
		t.Run(key, func(t *testing.T) {
			next := withRoutes(t, edit, "90", "10")
			if key == "routes" {
				next = withRoutes(t, "", "50", "50")
			}
			d := RestartNeeded(base, next)
			switch {
			case liveSection(f.Name) && len(d) != 0:
				t.Errorf("a live section flagged for a restart: %v", d)
			case !liveSection(f.Name) && (len(d) == 0 || !strings.HasPrefix(d[0], key)):
				t.Errorf("an edit of %s is not flagged as needing a restart: %v", key, d)
			}
		})
	}
}

func sprintf2(format, a, b string) string {
	return strings.Replace(strings.Replace(format, "%s", a, 1), "%s", b, 1)
}
