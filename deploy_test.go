package canaryd_test

// Packaging is checked here by construction: no container engine runs on
// the machines that test canaryd, so the Dockerfile is parsed with
// BuildKit's own parser and its build command is run for real; the
// Kubernetes and compose files are cross-checked; the Grafana and
// Prometheus files are checked against the metrics canaryd registers and
// by promtool.

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"canaryd/config"
	"canaryd/metrics"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

type instruction struct {
	cmd   string   // lower case: from, run, copy...
	args  []string // the words after it
	flags []string
	raw   string
}

type stage struct {
	from, name string
	ins        []instruction
}

func dockerfileStages(t *testing.T) []stage {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("Dockerfile does not parse: %v", err)
	}
	var stages []stage
	for _, n := range res.AST.Children {
		in := instruction{cmd: strings.ToLower(n.Value), flags: n.Flags, raw: n.Original}
		for a := n.Next; a != nil; a = a.Next {
			in.args = append(in.args, a.Value)
		}
		if in.cmd == "from" {
			s := stage{from: in.args[0]}
			if len(in.args) == 3 && strings.EqualFold(in.args[1], "as") {
				s.name = in.args[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			continue // ARG before FROM
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	return stages
}

func find(s stage, cmd string) []instruction {
	var out []instruction
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func goVersion(t *testing.T) string {
	data, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("no go directive in go.mod")
	}
	return string(m[1])
}

func TestDockerfile(t *testing.T) {
	stages := dockerfileStages(t)
	if len(stages) != 2 {
		t.Fatalf("%d stages, want a builder and a final image", len(stages))
	}
	build, run := stages[0], stages[1]
	if want := "golang:" + goVersion(t); build.from != want || build.name != "build" {
		t.Errorf("builder stage FROM %s AS %s; want %s AS build (go.mod's Go)", build.from, build.name, want)
	}
	if !strings.HasPrefix(run.from, "gcr.io/distroless/static") || !strings.HasSuffix(run.from, ":nonroot") {
		t.Errorf("final stage FROM %s; want distroless static, nonroot", run.from)
	}
	env := strings.Join(envOf(build), " ")
	if !strings.Contains(env, "CGO_ENABLED=0") {
		t.Errorf("builder ENV %q lacks CGO_ENABLED=0", env)
	}
	cmd := buildCommand(t, build)
	for _, want := range []string{"-trimpath", "-X main.version=${VERSION}", "./cmd/canaryd"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("build command %q lacks %q", cmd, want)
		}
	}
	var cacheMounts int
	for _, in := range find(build, "run") {
		for _, f := range in.flags {
			if strings.HasPrefix(f, "--mount=type=cache") {
				cacheMounts++
			}
		}
	}
	if cacheMounts < 2 {
		t.Errorf("%d cache mounts in the builder; want the module and build caches", cacheMounts)
	}
	users := find(run, "user")
	if len(users) != 1 || !strings.HasPrefix(users[0].args[0], "65532") {
		t.Errorf("final USER %v; want 65532 (nonroot)", users)
	}
	hc := find(run, "healthcheck")
	if len(hc) != 1 || !strings.Contains(hc[0].raw, `CMD ["canaryd", "healthcheck"`) {
		t.Errorf("HEALTHCHECK: %v", hc)
	}
	if ep := find(run, "entrypoint"); len(ep) != 1 || strings.Join(ep[0].args, " ") != "canaryd" {
		t.Errorf("ENTRYPOINT: %v", ep)
	}
	if c := find(run, "cmd"); len(c) != 1 || strings.Join(c[0].args, " ") != "run --config /etc/canaryd/config.yaml" {
		t.Errorf("CMD: %v", c)
	}
	if ex := strings.Join(flatten(find(run, "expose")), " "); ex != "8080 9901" {
		t.Errorf("EXPOSE %q; want the proxy and admin ports", ex)
	}
	// What the final stage copies from the builder, the builder makes.
	for _, c := range find(run, "copy") {
		if !strings.Contains(strings.Join(c.flags, " "), "--from=build") {
			t.Errorf("final stage copies from elsewhere than the builder: %s", c.raw)
		}
		if src := c.args[0]; !strings.Contains(cmd+" "+strings.Join(flatten(find(build, "run")), " "), src) {
			t.Errorf("final stage copies %s, which no builder step makes", src)
		}
	}
	ignore, err := os.ReadFile(".dockerignore")
	if err != nil || !strings.Contains(string(ignore), ".git") {
		t.Errorf(".dockerignore missing or lets .git in: %v", err)
	}
}

// envOf is a stage's ENV as NAME=value; the parser gives each variable as
// a (name, value, separator) triple.
func envOf(s stage) []string {
	var out []string
	for _, in := range find(s, "env") {
		for i := 0; i+1 < len(in.args); i += 3 {
			out = append(out, in.args[i]+"="+in.args[i+1])
		}
	}
	return out
}

func flatten(ins []instruction) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.args...)
	}
	return out
}

// buildCommand is the builder stage's `go build` RUN, as the shell gets it.
func buildCommand(t *testing.T, build stage) string {
	for _, in := range find(build, "run") {
		if c := strings.Join(in.args, " "); strings.Contains(c, "go build") {
			return c
		}
	}
	t.Fatal("no go build in the builder stage")
	return ""
}

// The very build command of the builder stage, run here: the binary is
// static, and version and validate work from it.
func TestDockerBuildCommandMakesAStaticBinary(t *testing.T) {
	stages := dockerfileStages(t)
	build := stages[0]
	out := t.TempDir()
	cmd := strings.ReplaceAll(buildCommand(t, build), "/out/", out+"/")
	sh := exec.Command("sh", "-c", cmd)
	sh.Env = append(os.Environ(), "VERSION=v0.0.0-dockertest")
	sh.Env = append(sh.Env, envOf(build)...)
	if b, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, b)
	}
	bin := filepath.Join(out, "canaryd")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v program header: not static", p.Type)
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Error("binary has a .dynamic section: not static")
	}
	f.Close()
	if b, err := exec.Command(bin, "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(b), "canaryd v0.0.0-dockertest ") {
		t.Errorf("version from the image's binary: %v %s", err, b)
	}
	if b, err := exec.Command(bin, "validate", "--config", "config.yaml").CombinedOutput(); err != nil || !strings.Contains(string(b), "ok (") {
		t.Errorf("validate from the image's binary: %v %s", err, b)
	}
}

// registered records the metric names canaryd's collectors describe.
type registered struct{ names map[string]bool }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *registered) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return nil
}
func (r *registered) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		r.Register(c)
	}
}
func (r *registered) Unregister(prometheus.Collector) bool { return true }

func exportedNames() map[string]bool {
	r := &registered{names: map[string]bool{}}
	metrics.NewReloads(r)
	metrics.NewHealth(r)
	metrics.NewRequests(r)
	metrics.NewRollouts(r)
	metrics.NewTLS(r)
	metrics.NewOverload(r, map[string]int{"max_connections": 1}, func() int { return 0 }, func() int { return 0 })
	for n := range r.names {
		if strings.HasSuffix(n, "_seconds") { // histograms
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				r.names[n+s] = true
			}
		}
	}
	return r.names
}

var metricRef = regexp.MustCompile(`\bcanaryd(?::[a-z0-9_]+:[a-z0-9_]+|_[a-z0-9_]+)\b`)

// checkPromQL checks that each expression names only metrics canaryd
// exports (or recording rules of ours), and that promtool parses it.
func checkPromQL(t *testing.T, where string, exprs []string, recorded map[string]bool) {
	t.Helper()
	names := exportedNames()
	for _, e := range exprs {
		for _, ref := range metricRef.FindAllString(e, -1) {
			if !names[ref] && !recorded[ref] {
				t.Errorf("%s: %q is not a metric canaryd exports (query: %s)", where, ref, e)
			}
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CANARYD_REQUIRE_PROMETHEUS") != "" {
			t.Fatal("promtool not installed; run ./scripts/test.sh")
		}
		t.Log("promtool not installed: PromQL syntax not checked")
		return
	}
	// A rules file of recording rules is how promtool checks expressions.
	var b strings.Builder
	b.WriteString("groups:\n  - name: check\n    rules:\n")
	for i, e := range exprs {
		e = strings.NewReplacer("$__rate_interval", "1m", "$route", "web").Replace(e)
		q, _ := json.Marshal(e)
		fmt.Fprintf(&b, "      - record: check:expr_%d\n        expr: %s\n", i, q)
	}
	f := filepath.Join(t.TempDir(), "exprs.yml")
	os.WriteFile(f, []byte(b.String()), 0o644)
	if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
		t.Errorf("%s: promtool rejects a query: %v\n%s", where, err, out)
	}
}

func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("examples/grafana/canaryd.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct {
				Name, Type string
				Query      any
			}
		}
		Panels []struct {
			Title      string
			Datasource struct{ Type, UID string }
			Targets    []struct {
				Expr       string
				Datasource struct{ UID string }
			}
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	var dsVar string
	for _, v := range dash.Templating.List {
		if v.Type == "datasource" && v.Query == "prometheus" {
			dsVar = "${" + v.Name + "}"
		}
	}
	if dsVar == "" {
		t.Fatal("no Prometheus datasource variable")
	}
	var exprs []string
	titles := map[string]bool{}
	for _, p := range dash.Panels {
		titles[p.Title] = true
		if p.Datasource.UID != dsVar {
			t.Errorf("panel %q uses datasource %q, not the variable %s", p.Title, p.Datasource.UID, dsVar)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, want := range []string{"Requests/s by pool", "Error rate by pool (5xx / answered)", "p99 latency by pool", "Live weights (percent)",
		"Rollout step", "Rollout state", "Instance health (1 in rotation)", "Config reload"} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}
	checkPromQL(t, "grafana dashboard", exprs, nil)
}

func promtoolOrSkip(t *testing.T) string {
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CANARYD_REQUIRE_PROMETHEUS") != "" {
			t.Fatal("promtool not installed; run ./scripts/test.sh")
		}
		t.Skip("promtool not installed")
	}
	return p
}

func TestPrometheusRulesAndConfig(t *testing.T) {
	promtool := promtoolOrSkip(t)
	dir := "examples/prometheus"
	for _, args := range [][]string{
		{"check", "rules", "rules.yml"},
		{"check", "config", "prometheus.yml"},
		{"test", "rules", "rules_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
	var rules struct {
		Groups []struct {
			Rules []struct{ Record, Alert, Expr string }
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, "rules.yml"))
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	var exprs []string
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
			if r.Alert != "" {
				alerts[r.Alert] = true
			}
			exprs = append(exprs, r.Expr)
		}
	}
	for _, want := range []string{"CanaryErrorRateAboveStable", "RolloutRolledBack", "ConfigReloadFailing", "InstanceDown"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
	checkPromQL(t, "rules.yml", exprs, recorded)
}

// k8s is the manifests by kind.
type k8s map[string]map[string]any

func loadManifests(t *testing.T) k8s {
	files, _ := filepath.Glob("deploy/kubernetes/*.yaml")
	out := k8s{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); err != nil {
				break
			}
			if kind, _ := doc["kind"].(string); kind != "" && kind != "Kustomization" {
				out[kind] = doc
			}
		}
	}
	return out
}

// get walks a decoded YAML document: keys and list indices.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string { return fmt.Sprint(v) }

func subset(sel, labels any) bool {
	s, _ := sel.(map[string]any)
	l, _ := labels.(map[string]any)
	if len(s) == 0 {
		return false
	}
	for k, v := range s {
		if l[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	for _, kind := range []string{"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "ServiceMonitor"} {
		if m[kind] == nil {
			t.Fatalf("no %s in deploy/kubernetes", kind)
		}
	}
	dep, svc, cm := m["Deployment"], m["Service"], m["ConfigMap"]
	podLabels := get(dep, "spec", "template", "metadata", "labels")
	for what, sel := range map[string]any{
		"Deployment selector": get(dep, "spec", "selector", "matchLabels"),
		"Service selector":    get(svc, "spec", "selector"),
		"PDB selector":        get(m["PodDisruptionBudget"], "spec", "selector", "matchLabels"),
	} {
		if !subset(sel, podLabels) {
			t.Errorf("%s %v does not select the pod labels %v", what, sel, podLabels)
		}
	}
	if !subset(get(m["ServiceMonitor"], "spec", "selector", "matchLabels"), get(svc, "metadata", "labels")) {
		t.Error("the ServiceMonitor does not select the Service")
	}

	c := get(dep, "spec", "template", "spec", "containers", 0)
	ports := map[string]int{}
	for _, p := range get(c, "ports").([]any) {
		ports[str(get(p, "name"))] = get(p, "containerPort").(int)
	}
	svcPorts := map[string]bool{}
	for _, p := range get(svc, "spec", "ports").([]any) {
		svcPorts[str(get(p, "name"))] = true
		if _, ok := ports[str(get(p, "targetPort"))]; !ok {
			t.Errorf("Service port %v targets %v, which the container does not name", get(p, "name"), get(p, "targetPort"))
		}
	}
	if ep := str(get(m["ServiceMonitor"], "spec", "endpoints", 0, "port")); !svcPorts[ep] {
		t.Errorf("the ServiceMonitor scrapes port %q, which the Service lacks", ep)
	}

	// The config in the ConfigMap is valid and agrees with the Deployment.
	raw := str(get(cm, "data", "config.yaml"))
	cfg, err := config.Parse("configmap config.yaml", []byte(raw))
	if err != nil {
		t.Fatalf("the ConfigMap's config: %v", err)
	}
	portOf := func(addr string) int {
		var p int
		fmt.Sscanf(addr[strings.LastIndex(addr, ":")+1:], "%d", &p)
		return p
	}
	if ports["http"] != portOf(cfg.Listen) || ports["admin"] != portOf(cfg.Admin.Listen) {
		t.Errorf("container ports %v; config listens on %s and %s", ports, cfg.Listen, cfg.Admin.Listen)
	}
	if a := get(dep, "spec", "template", "metadata", "annotations"); str(get(a, "prometheus.io/port")) != fmt.Sprint(ports["admin"]) || str(get(a, "prometheus.io/path")) != "/metrics" {
		t.Errorf("scrape annotations %v do not point at the admin /metrics", a)
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if get(c, probe, "httpGet", "path") != path || get(c, probe, "httpGet", "port") != "admin" {
			t.Errorf("%s: %v; want %s on the admin port", probe, get(c, probe), path)
		}
	}

	mounts := map[string]map[string]any{}
	for _, vm := range get(c, "volumeMounts").([]any) {
		vm := vm.(map[string]any)
		if vm["subPath"] != nil {
			t.Errorf("volume %v is mounted with subPath: live reload would never see an edit", vm["name"])
		}
		mounts[str(vm["name"])] = vm
	}
	volumes := map[string]map[string]any{}
	for _, v := range get(dep, "spec", "template", "spec", "volumes").([]any) {
		volumes[str(get(v, "name"))] = v.(map[string]any)
	}
	args := get(c, "args").([]any)
	configArg := ""
	for i, a := range args {
		if a == "--config" && i+1 < len(args) {
			configArg = str(args[i+1])
		}
	}
	mountedAt := func(path string) string { // the volume a path lives on
		best, bestLen := "", -1
		for name, vm := range mounts {
			if mp := str(vm["mountPath"]); strings.HasPrefix(path, mp+"/") && len(mp) > bestLen {
				best, bestLen = name, len(mp)
			}
		}
		return best
	}
	if v := mountedAt(configArg); str(get(volumes[v], "configMap", "name")) != str(get(cm, "metadata", "name")) {
		t.Errorf("--config %s is not on the ConfigMap's volume (volume %q)", configArg, v)
	}
	if v := mountedAt(cfg.Admin.TokenFile); str(get(volumes[v], "secret", "secretName")) != str(get(m["Secret"], "metadata", "name")) {
		t.Errorf("admin.token_file %s is not on the Secret's volume", cfg.Admin.TokenFile)
	}
	if v := mountedAt(cfg.StateDir + "/x"); get(volumes[v], "emptyDir") == nil && get(volumes[v], "persistentVolumeClaim") == nil {
		t.Errorf("state_dir %s is not on a writable volume", cfg.StateDir)
	}
	sc := get(c, "securityContext")
	if get(sc, "readOnlyRootFilesystem") != true || get(dep, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
		t.Errorf("security context: %v", sc)
	}
	if get(c, "resources", "requests", "cpu") == nil || get(c, "resources", "requests", "memory") == nil {
		t.Error("no resource requests")
	}
	// GOMEMLIMIT below the memory limit (about 90%): equal to it, the GC
	// would not work harder before the OOM killer struck.
	var memlimit string
	for _, e := range get(c, "env").([]any) {
		if str(get(e, "name")) == "GOMEMLIMIT" {
			memlimit = str(get(e, "value"))
		}
	}
	limit := str(get(c, "resources", "limits", "memory"))
	var lim, set int
	if _, err := fmt.Sscanf(limit, "%dMi", &lim); err != nil {
		t.Fatalf("memory limit %q: %v", limit, err)
	}
	if _, err := fmt.Sscanf(memlimit, "%dMiB", &set); err != nil || set >= lim || set < lim*8/10 {
		t.Errorf("GOMEMLIMIT %q for a %s limit; want 80%%-99%% of it, in MiB", memlimit, limit)
	}
	if strings.Contains(raw, ".default.") {
		t.Error("the ConfigMap's config names the default namespace")
	}
	// kubectl apply -k applies neither a placeholder Secret (it would
	// overwrite the real token) nor the ServiceMonitor (its kind exists
	// only with the Prometheus Operator); every resource it lists exists.
	var kust struct{ Resources []string }
	if err := yaml.Unmarshal(mustReadFile(t, "deploy/kubernetes/kustomization.yaml"), &kust); err != nil {
		t.Fatal(err)
	}
	for _, r := range kust.Resources {
		doc := map[string]any{}
		if err := yaml.Unmarshal(mustReadFile(t, filepath.Join("deploy/kubernetes", r)), &doc); err != nil {
			t.Fatalf("kustomization resource %s: %v", r, err)
		}
		if k := str(doc["kind"]); k == "Secret" || k == "ServiceMonitor" {
			t.Errorf("the kustomization applies %s (%s)", r, k)
		}
	}
	grace := get(dep, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)
	if float64(grace) <= cfg.Server.DrainTimeout.D().Seconds() {
		t.Errorf("terminationGracePeriodSeconds %d does not leave room for the %v drain", grace, cfg.Server.DrainTimeout)
	}
}

func TestComposeExample(t *testing.T) {
	data, err := os.ReadFile("examples/compose/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image   string
			Command []string
			Volumes []string
			Ports   []string
		}
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	cd := compose.Services["canaryd"]
	cfgPath := ""
	for _, v := range cd.Volumes {
		if parts := strings.Split(v, ":"); len(parts) >= 2 && parts[1] == "/etc/canaryd/config.yaml" {
			cfgPath = filepath.Join("examples/compose", parts[0])
		}
	}
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatalf("canaryd's mounted config: %v", err)
	}
	cfg, err := config.Parse(cfgPath, raw)
	if err != nil {
		t.Fatal(err)
	}
	// Every instance is a compose service, listening where the config says.
	for _, r := range cfg.Routes {
		for _, p := range r.Pools {
			for _, in := range p.Instances {
				host, port, _ := strings.Cut(in, ":")
				s, ok := compose.Services[host]
				if !ok {
					t.Errorf("instance %s: no compose service %q", in, host)
					continue
				}
				cmd := strings.Join(s.Command, " ")
				if s.Image != cd.Image || !strings.Contains(cmd, "backend --listen :"+port+" --pool "+p.Name) {
					t.Errorf("service %s: %s %q; want canaryd's image serving pool %s on :%s", host, s.Image, cmd, p.Name, port)
				}
			}
		}
	}
	prom, _ := os.ReadFile("examples/prometheus/prometheus.yml")
	_, adminPort, _ := strings.Cut(cfg.Admin.Listen, ":")
	if !strings.Contains(string(prom), `"canaryd:`+adminPort+`"`) {
		t.Errorf("prometheus.yml does not scrape canaryd:%s", adminPort)
	}
	var names []string
	for n := range compose.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	if got := strings.Join(names, " "); got != "blue-1 blue-2 canaryd grafana green-1 load prometheus" {
		t.Errorf("services: %s", got)
	}
}

// The systemd unit is what systemd-analyze verify accepts without a
// warning (its ExecStart pointed at a real canaryd), and it keeps the
// sandboxing the docs promise.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("examples/systemd/canaryd.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ExecStart=/usr/local/bin/canaryd run --config /etc/canaryd/config.yaml",
		"ExecReload=/bin/kill -HUP $MAINPID", "DynamicUser=yes", "StateDirectory=canaryd",
		"WorkingDirectory=/var/lib/canaryd", "ProtectSystem=strict", "NoNewPrivileges=yes",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE",
	} {
		if !strings.Contains(string(unit), want+"\n") {
			t.Errorf("unit lacks %q", want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "canaryd")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/canaryd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "canaryd.service")
	if err := os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/local/bin/canaryd"), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(analyze, "verify", path)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, stderr.String())
	}
}

// make dist builds static, versioned binaries and their SHA-256 sums (one
// foreign platform here, to keep the test short: the loop is the same).
func TestMakeDist(t *testing.T) {
	if testing.Short() {
		t.Skip("long test; runs without -short")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	dir := t.TempDir()
	// A copy of the tree, so that dist/ is made there, not in the checkout.
	if out, err := exec.Command("cp", "-r", ".", dir).CombinedOutput(); err != nil {
		t.Fatalf("copy: %v\n%s", err, out)
	}
	out, err := exec.Command("make", "-C", dir, "dist", "PLATFORMS=linux/arm64", "VERSION=v0.0.0-test").CombinedOutput()
	if err != nil {
		t.Fatalf("make dist: %v\n%s", err, out)
	}
	name := "canaryd-v0.0.0-test-linux-arm64"
	f, err := elf.Open(filepath.Join(dir, "dist", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 {
		t.Errorf("%s is for %v, want arm64", name, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is not static (%v)", name, p.Type)
		}
	}
	sums, err := os.ReadFile(filepath.Join(dir, "dist", "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	check := exec.Command("sha256sum", "-c", "SHA256SUMS")
	check.Dir = filepath.Join(dir, "dist")
	if out, err := check.CombinedOutput(); err != nil || !strings.Contains(string(sums), name) {
		t.Fatalf("SHA256SUMS %q does not check: %v\n%s", sums, err, out)
	}
	if !bytes.Contains(mustReadFile(t, filepath.Join(dir, "dist", name)), []byte("v0.0.0-test")) {
		t.Error("the version is not stamped in the binary")
	}
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every example config validates, says how to check it, and the shipped
// config.yaml says what running it does.
func TestExampleConfigs(t *testing.T) {
	files, _ := filepath.Glob("examples/configs/*.yaml")
	if len(files) < 5 {
		t.Fatalf("%d example configs, want at least 5", len(files))
	}
	for _, f := range files {
		data := mustReadFile(t, f)
		if _, err := config.Parse(f, data); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		if !strings.Contains(string(data), "canaryd validate "+f) {
			t.Errorf("%s does not say how to check it (canaryd validate %s)", f, f)
		}
	}
	// The cluster recipes' configs are valid too (the fast lane's check;
	// TestVMClusterRecipe and the compose test run them).
	for _, f := range []string{"examples/vm-cluster/canaryd.yaml", "examples/cluster/canaryd.yaml"} {
		if _, err := config.Parse(f, mustReadFile(t, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if head := strings.ReplaceAll(string(mustReadFile(t, "config.yaml"))[:600], "\n# ", " "); !strings.Contains(head, "starts an automatic rollout") {
		t.Errorf("config.yaml's header does not say that running it starts a rollout:\n%s", head)
	}
}
