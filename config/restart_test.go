package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
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
		"include":         `include: ["routes.d/*.yaml"]`,
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

// A probe interval alone is enough: the default timeout (2s) shrinks to
// half of it when that is shorter, instead of refusing interval: 2s.
func TestProbeTimeoutFitsTheInterval(t *testing.T) {
	for _, tc := range []struct {
		active string
		want   time.Duration
	}{
		{"{ path: /, interval: 2s }", time.Second},
		{"{ path: /, interval: 10s }", 2 * time.Second},
		{"{ path: /, interval: 5s, unhealthy_interval: 500ms }", 500 * time.Millisecond},
		{"{ path: /, interval: 2s, timeout: 1500ms }", 1500 * time.Millisecond},
	} {
		cfg, err := Parse("t.yaml", []byte("routes:\n  - name: web\n    health:\n      active: "+tc.active+"\n    pools:\n      - { name: a, weight: 100, instances: [\"127.0.0.1:1\"] }\n"))
		if err != nil {
			t.Errorf("%s: %v", tc.active, err)
			continue
		}
		if got := cfg.Routes[0].Health.Active.Timeout.D(); got != tc.want {
			t.Errorf("%s: timeout %v, want %v", tc.active, got, tc.want)
		}
	}
}
