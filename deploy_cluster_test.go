package canaryd_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"canaryd/config"

	"go.yaml.in/yaml/v3"
)

// docsIn decodes every document of the YAML files in dir, by kind and
// name.
func docsIn(t *testing.T, dir string) map[string]map[string]any {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	out := map[string]map[string]any{}
	for _, f := range files {
		dec := yaml.NewDecoder(bytes.NewReader(mustReadFile(t, f)))
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); err != nil {
				break
			}
			if kind := str(doc["kind"]); kind != "" && kind != "Kustomization" {
				out[kind+"/"+str(get(doc, "metadata", "name"))] = doc
			}
		}
	}
	return out
}

// The cluster variant for Kubernetes: three canaryd replicas whose config
// reaches the etcd StatefulSet's client Service, a three-member etcd whose
// initial cluster names its own pods, and budgets that keep a majority of
// both through a node drain.
func TestKubernetesClusterManifests(t *testing.T) {
	const dir = "deploy/kubernetes/cluster"
	m := docsIn(t, dir)
	dep, sts := m["Deployment/canaryd"], m["StatefulSet/canaryd-etcd"]
	if dep == nil || sts == nil || m["Service/canaryd"] == nil || m["Service/canaryd-etcd"] == nil || m["Service/canaryd-etcd-peers"] == nil {
		t.Fatalf("missing manifests; have %v", keys(m))
	}
	replicas := get(dep, "spec", "replicas").(int)
	if replicas != 3 || get(dep, "spec", "strategy", "rollingUpdate", "maxUnavailable") != 0 {
		t.Errorf("canaryd: %d replicas, strategy %v; want 3, one at a time with none unavailable", replicas, get(dep, "spec", "strategy"))
	}
	raw := str(get(m["ConfigMap/canaryd-config"], "data", "config.yaml"))
	cfg, err := config.Parse("cluster configmap", []byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster == nil || cfg.Cluster.Member != "" {
		t.Fatalf("the cluster config: %+v; want a cluster block, member ids from the pods' host names", cfg.Cluster)
	}
	// Every etcd endpoint is the client Service's name and port.
	etcdSvc := m["Service/canaryd-etcd"]
	for _, ep := range cfg.Cluster.Etcd.Endpoints {
		host, port, _ := strings.Cut(ep, ":")
		if host != str(get(etcdSvc, "metadata", "name")) || port != str(get(etcdSvc, "spec", "ports", 0, "port")) {
			t.Errorf("etcd endpoint %s is not the client Service %s:%v", ep, get(etcdSvc, "metadata", "name"), get(etcdSvc, "spec", "ports", 0, "port"))
		}
	}
	if !subset(get(etcdSvc, "spec", "selector"), get(sts, "spec", "template", "metadata", "labels")) {
		t.Error("the etcd client Service does not select the etcd pods")
	}
	// The StatefulSet's initial cluster is its own pods, by the headless
	// Service's DNS names.
	n := get(sts, "spec", "replicas").(int)
	svc := str(get(sts, "spec", "serviceName"))
	if m["Service/"+svc] == nil || get(m["Service/"+svc], "spec", "clusterIP") != "None" {
		t.Errorf("the StatefulSet's serviceName %q is not a headless Service", svc)
	}
	cmd := strings.Join(toStrings(get(sts, "spec", "template", "spec", "containers", 0, "command")), " ")
	var want []string
	for i := 0; i < n; i++ {
		pod := str(get(sts, "metadata", "name")) + "-" + string(rune('0'+i))
		want = append(want, pod+"=http://"+pod+"."+svc+":2380")
	}
	if !strings.Contains(cmd, "--initial-cluster="+strings.Join(want, ",")) || n != 3 {
		t.Errorf("etcd's initial cluster does not name its %d pods:\n%s", n, cmd)
	}
	// Budgets: a majority of canaryd and etcd's quorum survive a drain.
	for name, of := range map[string]int{"canaryd": replicas, "canaryd-etcd": n} {
		pdb := m["PodDisruptionBudget/"+name]
		if pdb == nil {
			t.Errorf("no PodDisruptionBudget %s", name)
			continue
		}
		if min, _ := get(pdb, "spec", "minAvailable").(int); min <= of/2 || min >= of {
			t.Errorf("PodDisruptionBudget %s: minAvailable %v of %d; want a majority that still lets a drain proceed", name, get(pdb, "spec", "minAvailable"), of)
		}
	}
	if !subset(get(m["PodDisruptionBudget/canaryd"], "spec", "selector", "matchLabels"), get(dep, "spec", "template", "metadata", "labels")) ||
		!subset(get(m["PodDisruptionBudget/canaryd-etcd"], "spec", "selector", "matchLabels"), get(sts, "spec", "template", "metadata", "labels")) {
		t.Error("a PodDisruptionBudget does not select its pods")
	}
	grace := get(dep, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)
	if float64(grace) <= cfg.Server.DrainTimeout.D().Seconds() {
		t.Errorf("terminationGracePeriodSeconds %d does not leave room for the %v drain", grace, cfg.Server.DrainTimeout)
	}
	// The kustomization lists exactly the files here.
	var kust struct{ Resources []string }
	if err := yaml.Unmarshal(mustReadFile(t, filepath.Join(dir, "kustomization.yaml")), &kust); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	var names []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			names = append(names, b)
		}
	}
	sort.Strings(names)
	sort.Strings(kust.Resources)
	if strings.Join(names, " ") != strings.Join(kust.Resources, " ") {
		t.Errorf("kustomization resources %v; files %v", kust.Resources, names)
	}
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, len(l))
	for i, x := range l {
		out[i] = str(x)
	}
	return out
}

// The compose cluster: three etcd, three canaryd on one config whose
// endpoints are the etcd services, HAProxy in TCP mode over the three
// replicas (and its config is one haproxy accepts), instances that are
// services.
func TestClusterComposeExample(t *testing.T) {
	const dir = "examples/cluster"
	var compose struct {
		Services map[string]struct {
			Image       string
			Command     []string
			Volumes     []string
			Environment map[string]string
			Hostname    string
		}
	}
	if err := yaml.Unmarshal(mustReadFile(t, filepath.Join(dir, "docker-compose.yml")), &compose); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("canaryd.yaml", mustReadFile(t, filepath.Join(dir, "canaryd.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	var replicas, etcds []string
	for name, s := range compose.Services {
		switch {
		case strings.HasPrefix(name, "canaryd-"):
			replicas = append(replicas, name)
			if strings.Join(s.Command, " ") != "run --config /etc/canaryd/config.yaml" || !contains(s.Volumes, "./canaryd.yaml:/etc/canaryd/config.yaml:ro") {
				t.Errorf("%s does not run canaryd.yaml: %v %v", name, s.Command, s.Volumes)
			}
		case strings.HasPrefix(name, "etcd-"):
			etcds = append(etcds, name)
			cmd := strings.Join(s.Command, " ")
			if !strings.Contains(cmd, "--name "+name) || !strings.Contains(s.Environment["ETCD_INITIAL_CLUSTER"], name+"=http://"+name+":2380") {
				t.Errorf("etcd service %s: %q, initial cluster %q", name, cmd, s.Environment["ETCD_INITIAL_CLUSTER"])
			}
		}
	}
	sort.Strings(replicas)
	sort.Strings(etcds)
	if len(replicas) != 3 || len(etcds) != 3 || cfg.Cluster == nil {
		t.Fatalf("replicas %v, etcd %v, cluster %+v", replicas, etcds, cfg.Cluster)
	}
	var eps []string
	for _, e := range etcds {
		eps = append(eps, e+":2379")
	}
	if strings.Join(cfg.Cluster.Etcd.Endpoints, " ") != strings.Join(eps, " ") {
		t.Errorf("cluster.etcd.endpoints %v; the etcd services are %v", cfg.Cluster.Etcd.Endpoints, eps)
	}
	for _, r := range cfg.Routes {
		for _, p := range r.Pools {
			for _, in := range p.Instances {
				host, port, _ := strings.Cut(in, ":")
				if s, ok := compose.Services[host]; !ok || !strings.Contains(strings.Join(s.Command, " "), "backend --listen :"+port+" --pool "+p.Name) {
					t.Errorf("instance %s is not a compose service serving pool %s", in, p.Name)
				}
			}
		}
	}
	hcfg := string(mustReadFile(t, filepath.Join(dir, "haproxy.cfg")))
	var servers []string
	_, port, _ := strings.Cut(cfg.Listen, ":")
	for _, m := range regexp.MustCompile(`(?m)^\s*server (\S+) (\S+):(\d+)`).FindAllStringSubmatch(hcfg, -1) {
		servers = append(servers, m[2])
		if m[3] != port {
			t.Errorf("haproxy server %s on port %s; canaryd listens on %s", m[1], m[3], port)
		}
	}
	if strings.Join(servers, " ") != strings.Join(replicas, " ") || !regexp.MustCompile(`(?m)^\s*mode tcp`).MatchString(hcfg) {
		t.Errorf("haproxy balances %v (tcp mode: %v); want the replicas %v in TCP mode", servers, strings.Contains(hcfg, "mode tcp"), replicas)
	}
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CANARYD_REQUIRE_HAPROXY") != "" {
			t.Fatal("haproxy is not installed; run ./scripts/test.sh, which installs it")
		}
		t.Skip("haproxy not installed (./scripts/test.sh installs it)")
	}
	out, err := exec.Command(bin, "-c", "-f", filepath.Join(dir, "haproxy.cfg")).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	// The only warnings allowed: the replicas' names do not resolve here.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "WARNING") && !strings.Contains(line, "could not resolve address") {
			t.Errorf("haproxy -c: %s", line)
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
