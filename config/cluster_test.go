package config

import (
	"strings"
	"testing"
	"time"
)

// The cluster block's defaults, and what the members must agree on: the
// routes, not the member's own listeners or id.
func TestClusterDefaultsAndHash(t *testing.T) {
	base := "listen: \":8080\"\ncluster: { name: edge }\nroutes:\n- name: web\n  pools:\n  - {name: a, weight: 100, instances: [\"127.0.0.1:1\"]}\n"
	cfg, err := Parse("c.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cluster
	if c.SessionTTL.D() != 5*time.Second || c.PartitionTimeout.D() != 30*time.Second || c.OnPartition != "stable" ||
		len(c.Etcd.Endpoints) != 1 || c.Etcd.Endpoints[0] != "127.0.0.1:2379" || c.Etcd.DialTimeout.D() != 2*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
	other, err := Parse("c.yaml", []byte("listen: \":9090\"\nadmin: {listen: \"127.0.0.1:9999\"}\nstate_dir: /x\ncluster: { name: edge, member: m2 }\nroutes:\n- name: web\n  pools:\n  - {name: a, weight: 100, instances: [\"127.0.0.1:1\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RoutesHash() != other.RoutesHash() || cfg.Routes[0].Hash() != other.Routes[0].Hash() {
		t.Error("member-specific settings changed the routes' hash")
	}
	changed, err := Parse("c.yaml", []byte(base[:len(base)-len("1\"]}\n")]+"2\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Routes[0].Hash() == changed.Routes[0].Hash() {
		t.Error("a changed instance did not change the route's hash")
	}
	renamed, err := Parse("c.yaml", []byte(strings.Replace(base, "{ name: edge }", "{ name: edge, member: m2 }", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if d := strings.Join(RestartNeeded(cfg, renamed), "; "); !strings.Contains(d, "cluster.member") {
		t.Errorf("a changed member id: restart needed for %q", d)
	}
}
