package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"canaryd/grpccode"
	"canaryd/upstream"
)

const validYAML = `
listen: ":8080"
admin: { listen: "127.0.0.1:9901" }
trusted_proxies: ["10.0.0.0/8", "127.0.0.1"]
routes:
  - name: web
    match: { host: "", path_prefix: "/" }
    pools:
      - { name: blue,  weight: 90, instances: ["127.0.0.1:9001", "127.0.0.1:9002"] }
      - { name: green, weight: 10, instances: ["http://127.0.0.1:9011/base/"] }
    sticky: { header: X-User-ID }
    force:  { header: X-Canary-Pool }
  - name: api
    match: { host: api.example.com, path_prefix: /v1 }
    balance: least_request
    preserve_host: false
    pools:
      - { name: v1, weight: 99.5, instances: ["127.0.0.1:9101"] }
      - { name: v2, weight: 0.5, instances: ["127.0.0.1:9102"] }
`

func TestParseValid(t *testing.T) {
	cfg, err := Parse("test.yaml", []byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(cfg.Routes); got != 2 {
		t.Fatalf("routes = %d", got)
	}
	web, api := cfg.Routes[0], cfg.Routes[1]
	if web.Pools[0].Weight.BasisPoints() != 9000 || web.Pools[1].Weight.BasisPoints() != 1000 {
		t.Errorf("web weights = %v %v", web.Pools[0].Weight, web.Pools[1].Weight)
	}
	if api.Pools[0].Weight.BasisPoints() != 9950 || api.Pools[1].Weight.BasisPoints() != 50 {
		t.Errorf("api weights = %v %v", api.Pools[0].Weight, api.Pools[1].Weight)
	}
	if web.Balance != BalanceRoundRobin || api.Balance != BalanceLeastRequest {
		t.Errorf("balance = %q %q", web.Balance, api.Balance)
	}
	if !web.PreservesHost() || api.PreservesHost() {
		t.Errorf("preserve_host = %v %v", web.PreservesHost(), api.PreservesHost())
	}
	if cfg.Upstream.MaxIdleConnsPerHost != DefaultMaxIdleConnsPerHost || cfg.Server.ReadHeaderTimeout.D() != DefaultReadHeaderTimeout {
		t.Errorf("defaults not applied: %+v %+v", cfg.Upstream, cfg.Server)
	}
}

func TestDefaultsOnMinimalConfig(t *testing.T) {
	cfg, err := Parse("min.yaml", []byte("routes:\n- name: r\n  pools:\n  - {name: a, weight: 100, instances: [\"localhost:1\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen: DefaultListen,
		Admin:  Admin{Listen: DefaultAdminListen},
		Server: Server{
			ReadHeaderTimeout: Duration(DefaultReadHeaderTimeout), IdleTimeout: Duration(DefaultIdleTimeout),
			MaxHeaderBytes: DefaultMaxHeaderBytes, DrainTimeout: Duration(DefaultDrainTimeout),
			HTTP2: HTTP2{
				MaxConcurrentStreams: DefaultH2MaxConcurrentStreams, MaxReceiveBufferPerStream: DefaultH2StreamBuffer,
				MaxReceiveBufferPerConnection: DefaultH2ConnBuffer, PingTimeout: Duration(DefaultH2PingTimeout),
				WriteByteTimeout: Duration(DefaultH2WriteByteTimeout), MaxReadFrameSize: DefaultH2StreamBuffer,
			},
			RequestBodyTimeout: Duration(DefaultRequestBodyTimeout), ClientWriteTimeout: Duration(DefaultClientWriteTimeout),
		},
		Upstream: Upstream{
			DialTimeout: Duration(DefaultDialTimeout), ResponseHeaderTimeout: Duration(DefaultResponseHeaderTimeout),
			MaxIdleConnsPerHost: DefaultMaxIdleConnsPerHost, IdleConnTimeout: Duration(DefaultIdleConnTimeout),
			MaxResponseHeaderBytes: DefaultMaxResponseHeaderBytes, FastPath: new(true),
			RequestBuffering: RequestBuffering{MaxBytes: new(int64(DefaultRequestBufferBytes))},
		},
	}
	got := *cfg
	got.Routes = nil
	want.Reload = Reload{Debounce: Duration(DefaultReloadDebounce), PollInterval: Duration(DefaultReloadPollInterval)}
	if got.Listen != want.Listen || !reflect.DeepEqual(got.Admin, want.Admin) || got.Server != want.Server || !reflect.DeepEqual(got.Upstream, want.Upstream) || got.Reload != want.Reload {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}
	if got.TLS.Enabled() || got.TLS.MinVersion != "1.2" || got.GRPC.Errors() != grpccode.DefaultErrors ||
		got.TLS.SessionTicketRotation.D() != DefaultTicketRotation || !*got.TLS.OCSPStapling {
		t.Errorf("tls and grpc defaults: %+v %+v", got.TLS, got.GRPC)
	}
	if r := cfg.Routes[0]; r.Match.PathPrefix != "/" || r.Balance != BalanceRoundRobin || r.Pools[0].Protocol != upstream.HTTP1 {
		t.Errorf("route defaults: %+v", r)
	}
}

func TestParsePercent(t *testing.T) {
	for _, tc := range []struct {
		in   string
		bp   int
		fail string
	}{
		{"0", 0, ""}, {"100", 10000, ""}, {"10", 1000, ""}, {"0.5", 50, ""}, {"0.29", 29, ""},
		{"33.33", 3333, ""}, {"99.99", 9999, ""}, {"100.00", 10000, ""}, {"007", 700, ""},
		{"100.01", 0, "above 100"}, {"101", 0, "above 100"}, {"1000", 0, "above 100"},
		{"1.234", 0, "more than two decimals"}, {"-1", 0, "not a percentage"}, {"abc", 0, "not a percentage"},
		{"", 0, "not a percentage"}, {".5", 0, "not a percentage"}, {"5.", 0, "not a percentage"}, {"1e2", 0, "not a percentage"},
	} {
		got, err := ParsePercent(tc.in)
		if tc.fail != "" {
			if err == nil || !strings.Contains(err.Error(), tc.fail) {
				t.Errorf("ParsePercent(%q) err = %v, want %q", tc.in, err, tc.fail)
			}
			continue
		}
		if err != nil || got.BasisPoints() != tc.bp {
			t.Errorf("ParsePercent(%q) = %d, %v; want %d", tc.in, got, err, tc.bp)
		}
		if back, _ := ParsePercent(got.String()); back != got {
			t.Errorf("String round trip of %q: %q", tc.in, got.String())
		}
	}
}

// route wraps pools into a one-route config so each case states only what
// is wrong with it.
func route(body string) string {
	return "routes:\n  - name: web\n" + body
}

const twoPools = `    pools:
      - { name: blue, weight: 90, instances: ["127.0.0.1:9001"] }
      - { name: green, weight: 10, instances: ["127.0.0.1:9011"] }
`

func TestInvalidConfigs(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string // substrings of one problem: the field, the reason
		line int
	}{
		{"empty file", "", []string{"empty"}, 0},
		{"no routes", "listen: \":8080\"\n", []string{"routes", "no routes"}, 1},
		{"unknown top key", "listn: \":8080\"\n" + route(twoPools), []string{`unknown key "listn"`, "top level"}, 1},
		{"unknown route key", route("    wieght: 5\n" + twoPools), []string{`unknown key "wieght"`, "route"}, 3},
		{"unknown pool key", route("    pools:\n      - { name: a, weight: 100, instance: [\"127.0.0.1:1\"] }\n"), []string{`unknown key "instance"`, "pool"}, 4},
		{"yaml syntax", "routes: [\n", []string{"YAML syntax"}, 0},
		{"mirror pool unknown", route("    mirror: { pool: red }\n" + twoPools), []string{"mirror.pool", `"red" is not a pool`}, 3},
		{"mirror compare", route("    mirror: { pool: green, compare: [bodies] }\n" + twoPools), []string{"mirror.compare[0]", "use status, headers or body"}, 3},
		{"mirror method", route("    mirror: { pool: green, methods: [get] }\n" + twoPools), []string{"mirror.methods[0]", "not an HTTP method"}, 3},
		{"mirror queue", route("    mirror: { pool: green, queue: -1 }\n" + twoPools), []string{"mirror.queue", "outside 1 to 100000"}, 3},
		{"mirror and shadow", route("    mirror: { pool: green }\n    rollout: { stable: blue, canary: green, shadow: {} }\n" + twoPools), []string{"mirror", "keep one of the two"}, 3},
		{"shadow mismatch rate", route("    rollout: { stable: blue, canary: green, shadow: { max_mismatch_rate: 2 } }\n" + twoPools), []string{"shadow.max_mismatch_rate", "not a rate"}, 3},
		{"tripwire window too short", route("    rollout: { stable: blue, canary: green, tripwire: { window: 500ms } }\n" + twoPools), []string{"tripwire.window", "shorter than 1s"}, 3},
		{"analysis confidence", route("    rollout: { stable: blue, canary: green, analysis: { confidence: 1 } }\n" + twoPools), []string{"analysis.confidence", "not in [0.5, 1)"}, 3},
		{"gate point", route("    rollout:\n      stable: blue\n      canary: green\n      gates:\n        - { name: smoke, at: before, url: \"http://127.0.0.1:1/\" }\n" + twoPools), []string{"gates[0].at", `"before" is not a gate point`, "pre_traffic"}, 7},
		{"gate post_promotion", route("    rollout:\n      stable: blue\n      canary: green\n      gates:\n        - { name: bake, at: post_promotion, url: \"http://127.0.0.1:1/\" }\n" + twoPools), []string{"gates[0].at", "use pre_promotion"}, 7},
		{"gate url", route("    rollout:\n      stable: blue\n      canary: green\n      gates:\n        - name: smoke\n          at: step\n          url: \"ftp://x/\"\n" + twoPools), []string{"gates[0].url", "not an http(s) URL"}, 9},
		{"gate names", route("    rollout:\n      stable: blue\n      canary: green\n      gates:\n        - { name: a, at: step, url: \"http://127.0.0.1:1/\" }\n        - { name: a, at: step, url: \"http://127.0.0.1:1/\" }\n" + twoPools), []string{"gates[1].name", "unique name"}, 8},
		{"gate kind", route("    rollout:\n      stable: blue\n      canary: green\n      gates:\n        - { name: a, at: step, kind: ticket, url: \"http://127.0.0.1:1/\" }\n" + twoPools), []string{"gates[0].kind", `"ticket" is not a kind`}, 7},
		{"gate secret missing", route("    rollout:\n      stable: blue\n      canary: green\n      gates:\n        - { name: a, at: step, url: \"http://127.0.0.1:1/\", secret_file: /nonexistent/k }\n" + twoPools), []string{"gates[0].secret_file", "no such file", "openssl rand"}, 7},
		{"gate header file missing", route("    rollout:\n      stable: blue\n      canary: green\n      gates:\n        - { name: a, at: step, url: \"http://127.0.0.1:1/\", headers: { Authorization: { file: /nonexistent/t } } }\n" + twoPools), []string{"gates[0].headers.Authorization.file", "no such file"}, 7},
		{"gate header shape", route("    rollout:\n      stable: blue\n      canary: green\n      gates:\n        - { name: a, at: step, url: \"http://127.0.0.1:1/\", headers: { X-A: { value: a, file: b } } }\n" + twoPools), []string{"exactly one of value and file"}, 7},
		{"gate retries", route("    rollout:\n      stable: blue\n      canary: green\n      gates:\n        - { name: a, at: step, url: \"http://127.0.0.1:1/\", retries: 11 }\n" + twoPools), []string{"gates[0].retries", "not from 0 to 10"}, 7},
		{"notify format", route("    rollout:\n      stable: blue\n      canary: green\n      notify:\n        - { url: \"http://127.0.0.1:1/\", format: discord }\n" + twoPools), []string{"notify[0].format", `"discord" is not a format`, "slack"}, 7},
		{"notify event", route("    rollout:\n      stable: blue\n      canary: green\n      notify:\n        - { url: \"http://127.0.0.1:1/\", events: [promoted, rollback] }\n" + twoPools), []string{"notify[0].events[1]", `"rollback" is not an event`, "rolled_back"}, 7},
		{"notify url", route("    rollout:\n      stable: blue\n      canary: green\n      notify:\n        - { url: hooks.slack.com/x }\n" + twoPools), []string{"notify[0].url", "not an http(s) URL"}, 7},
		{"notify secret", route("    rollout:\n      stable: blue\n      canary: green\n      notify:\n        - { url: \"http://127.0.0.1:1/\", secret_file: /nonexistent/k }\n" + twoPools), []string{"notify[0].secret_file", "openssl rand"}, 7},
		{"http check path", route("    rollout:\n      stable: blue\n      canary: green\n      analysis:\n        http:\n          - { name: a, url: \"http://127.0.0.1:1/q\", json_path: \"results[0]\", max: 1 }\n" + twoPools), []string{"analysis.http[0].json_path", "must start with $"}, 8},
		{"http check bounds", route("    rollout:\n      stable: blue\n      canary: green\n      analysis:\n        http:\n          - { name: a, url: \"http://127.0.0.1:1/q\", json_path: \"$.v\" }\n" + twoPools), []string{"analysis.http[0]", "set min, max or both"}, 8},
		{"http check missing", route("    rollout:\n      stable: blue\n      canary: green\n      analysis:\n        http:\n          - { name: a, url: \"http://127.0.0.1:1/q\", json_path: \"$.v\", max: 1, missing: pass }\n" + twoPools), []string{"analysis.http[0].missing", `"pass" is not hold or fail`}, 8},
		{"http check url", route("    rollout:\n      stable: blue\n      canary: green\n      analysis:\n        http:\n          - { name: a, url: \"influx:8086/query\", json_path: \"$.v\", max: 1 }\n" + twoPools), []string{"analysis.http[0].url", "not an http(s) URL"}, 8},
		{"bake duration", route("    rollout:\n      stable: blue\n      canary: green\n      bake: { duration: 0s }\n" + twoPools), []string{"bake.duration", "too short"}, 6},
		{"rollback mode", route("    rollout: { stable: blue, canary: green, rollback: { mode: slow } }\n" + twoPools), []string{"rollback.mode", `"slow" is not instant or gradual`}, 3},
		{"rollback steps", route("    rollout: { stable: blue, canary: green, rollback: { mode: gradual, steps: [20, 50, 0] } }\n" + twoPools), []string{"rollback.steps[1]", "does not fall"}, 3},
		{"rollback steps end", route("    rollout: { stable: blue, canary: green, rollback: { mode: gradual, steps: [50, 20] } }\n" + twoPools), []string{"rollback.steps", "must be 0"}, 3},
		{"rollback interval", route("    rollout: { stable: blue, canary: green, rollback: { interval: 100ms } }\n" + twoPools), []string{"rollback.interval", "shorter than 1s"}, 3},
		{"fast_revert", route("    rollout: { stable: blue, canary: green, fast_revert: 5s }\n" + twoPools), []string{"fast_revert", "shorter than 1m"}, 3},
		{"dry_run check", route("    rollout: { stable: blue, canary: green, analysis: { dry_run: [error_rat] } }\n" + twoPools), []string{"analysis.dry_run[0]", `"error_rat" is not a built-in check`, "error_rate"}, 3},
		{"max_gathering", route("    rollout: { stable: blue, canary: green, max_gathering: -1 }\n" + twoPools), []string{"max_gathering", "at least 1"}, 3},
		{"force allow_from", route("    force: { header: X-Canary-Pool, allow_from: [\"10.0.0.0/33\"] }\n" + twoPools), []string{"force.allow_from[0]", "not a CIDR", "trusted_proxies"}, 3},
		{"force allow_from trusted_proxies empty", route("    force: { header: X-Canary-Pool, allow_from: [trusted_proxies] }\n" + twoPools), []string{"force.allow_from[0]", "trusted_proxies is empty"}, 3},
		{"force secret_file missing", route("    force: { header: X-Canary-Pool, secret_file: /nonexistent/secret }\n" + twoPools), []string{"force.secret_file", "no such file", "create the file"}, 3},
		{"force restriction without force", route("    force: { allow_from: [\"10.0.0.0/8\"] }\n" + twoPools), []string{"force", "neither is set"}, 3},
		{"rule unknown pool", route("    rules:\n      - { name: beta, match: { header: { X-Beta: { exact: \"1\" } } }, pool: red }\n" + twoPools), []string{"rules[0](beta).pool", `"red" is not a pool`}, 4},
		{"rule invalid regex", route("    rules:\n      - name: ua\n        match: { header: { User-Agent: { regex: \"Firefox/(\" } } }\n        pool: green\n" + twoPools), []string{"rules[0](ua).match.header.User-Agent.regex", "not an RE2 regular expression"}, 5},
		{"rule regex too large", route("    rules:\n      - name: ua\n        match: { header: { User-Agent: { regex: \"(abcdefgh|ijklmnop){1,500}\" } } }\n        pool: green\n" + twoPools), []string{"regex", "too large"}, 5},
		{"rule two kinds", route("    rules:\n      - name: t\n        match: { query: { t: { exact: a, prefix: b } } }\n        pool: green\n" + twoPools), []string{"match.query.t", "exactly one of exact, prefix, regex or in"}, 5},
		{"rule no condition", route("    rules:\n      - { name: t, match: {}, pool: green }\n" + twoPools), []string{"rules[0](t).match", "no condition"}, 4},
		{"rule bad source", route("    rules:\n      - { name: t, match: { source: [\"10.0.0.0/40\"] }, pool: green }\n" + twoPools), []string{"match.source[0]", "not a CIDR"}, 4},
		{"rule name twice", route("    rules:\n      - { name: t, match: { cookie: { b: { in: [x] } } }, pool: green }\n      - { name: t, match: { cookie: { b: { in: [y] } } }, pool: green }\n" + twoPools), []string{"rules[1](t).name", "used twice"}, 5},
		{"sticky set with header", route("    sticky: { header: X-User, set: true }\n" + twoPools), []string{"sticky.header", "remove header"}, 3},
		{"sticky set without cookie", route("    sticky: { set: true }\n" + twoPools), []string{"sticky.cookie", "add cookie: NAME"}, 3},
		{"sticky ttl without set", route("    sticky: { cookie: uid, ttl: 1h }\n" + twoPools), []string{"sticky.ttl", "add set: true"}, 3},
		{"sticky same_site none not secure", route("    sticky: { cookie: cd, set: true, secure: never, same_site: none }\n" + twoPools), []string{"sticky.same_site", "not Secure"}, 3},
		{"sticky secret missing", route("    sticky: { cookie: cd, set: true, secret_file: /nonexistent/k }\n" + twoPools), []string{"sticky.secret_file", "openssl rand"}, 3},
		{"segment unknown rule", route("    rollout: { stable: blue, canary: green, segment: beta }\n" + twoPools), []string{"rollout.segment", "not a rule"}, 3},
		{"segment rule with a pool", route("    rollout: { stable: blue, canary: green, segment: beta }\n    rules:\n      - { name: beta, match: { header: { X-Beta: { exact: \"1\" } } }, pool: green }\n" + twoPools), []string{"rules[0](beta).pool", "remove pool"}, 5},
		{"segment blue_green", route("    rollout: { strategy: blue_green, stable: blue, canary: green, segment: beta }\n    rules:\n      - { name: beta, match: { header: { X-Beta: { exact: \"1\" } } } }\n" + twoPools), []string{"rollout.segment", "blue_green"}, 3},
		{"propagate same as force", route("    force: { header: X-Canary-Pool }\n    propagate: { header: x-canary-pool }\n" + twoPools), []string{"propagate.header", "header of its own"}, 4},
		{"route name missing", "routes:\n  - match: {path_prefix: /}\n" + twoPools, []string{"routes[0]().name", "route name is missing"}, 2},
		{"route name chars", "routes:\n  - name: \"my route\"\n" + twoPools, []string{"routes[0](my route).name", "letters, digits"}, 2},
		{"duplicate route", route(twoPools) + "  - name: web\n    match: {path_prefix: /x}\n" + twoPools, []string{"routes[1](web).name", "already used"}, 6},
		{"duplicate match", route(twoPools) + "  - name: other\n" + twoPools, []string{"routes[1](other).match", "could never match"}, 6},
		{"no pools", route("    match: {path_prefix: /}\n"), []string{"routes[0](web).pools", "no pools"}, 2},
		{"no instance source", route("    pools:\n      - { name: a, weight: 100 }\n"), []string{"pools[0](a).instances", "registered: true"}, 4},
		{"two instance sources", route("    pools:\n      - { name: a, weight: 100, instances: [\"127.0.0.1:1\"], registered: true }\n"), []string{"pools[0](a).registered", "exactly one of instances, discovery and registered", "keep one"}, 4},
		{"discovery and registered", route("    pools:\n      - { name: a, weight: 100, registered: true, discovery: { dns: web.internal, port: 80 } }\n"), []string{"has discovery and registered"}, 4},
		{"discovery without name", route("    pools:\n      - { name: a, weight: 100, discovery: { port: 80 } }\n"), []string{"discovery.dns", "dns: web.internal"}, 4},
		{"discovery without port", route("    pools:\n      - { name: a, weight: 100, discovery: { dns: web.internal } }\n"), []string{"discovery.port", "A/AAAA records need"}, 4},
		{"srv with a port", route("    pools:\n      - { name: a, weight: 100, discovery: { dns: _http._tcp.web.internal, port: 80 } }\n"), []string{"discovery.port", "remove port"}, 4},
		{"discovery resolver", route("    pools:\n      - { name: a, weight: 100, discovery: { dns: web.internal, port: 80, resolver: 127.0.0.1 } }\n"), []string{"discovery.resolver", "127.0.0.1:53"}, 4},
		{"discovery interval", route("    pools:\n      - { name: a, weight: 100, discovery: { dns: web.internal, port: 80, interval: 10ms } }\n"), []string{"discovery.interval", "under 100ms"}, 4},
		{"discovery max drop", route("    pools:\n      - { name: a, weight: 100, discovery: { dns: web.internal, port: 80, max_drop_percent: 101 } }\n"), []string{"discovery.max_drop_percent", "1 to 100"}, 4},
		{"discovery empty_after", route("    pools:\n      - { name: a, weight: 100, discovery: { dns: web.internal, port: 80, empty_after: -1 } }\n"), []string{"discovery.empty_after", "at least 1"}, 4},
		{"discovery scheme", route("    pools:\n      - { name: a, weight: 100, discovery: { dns: web.internal, port: 80, scheme: ftp } }\n"), []string{"discovery.scheme", "use http or https"}, 4},
		{"version on a registered pool", route("    pools:\n      - { name: a, weight: 100, registered: true, version: v1 }\n"), []string{"pools[0](a).version", "comes with its registrations"}, 4},
		{"version on a discovered pool", route("    pools:\n      - { name: a, weight: 100, version: v1, discovery: { dns: web.internal, port: 80 } }\n"), []string{"pools[0](a).version", "discovery.version"}, 4},
		{"version with a space", route("    pools:\n      - { name: a, weight: 100, version: \"v 1\", instances: [\"127.0.0.1:1\"] }\n"), []string{"pools[0](a).version", "without spaces"}, 4},
		{"pool name missing", route("    pools:\n      - { weight: 100, instances: [\"127.0.0.1:1\"] }\n"), []string{"pools[0]().name", "pool name is missing"}, 4},
		{"duplicate pool", route("    pools:\n      - { name: a, weight: 50, instances: [\"127.0.0.1:1\"] }\n      - { name: a, weight: 50, instances: [\"127.0.0.1:2\"] }\n"), []string{"pools[1](a).name", "used twice"}, 5},
		{"weight above 100", route("    pools:\n      - { name: a, weight: 150, instances: [\"127.0.0.1:1\"] }\n"), []string{"weight", "above 100"}, 4},
		{"weight negative", route("    pools:\n      - { name: a, weight: -5, instances: [\"127.0.0.1:1\"] }\n"), []string{"weight", "not a percentage"}, 4},
		{"weight three decimals", route("    pools:\n      - { name: a, weight: 99.995, instances: [\"127.0.0.1:1\"] }\n      - { name: b, weight: 0.005, instances: [\"127.0.0.1:2\"] }\n"), []string{"weight", "more than two decimals"}, 4},
		{"weight not a number", route("    pools:\n      - { name: a, weight: lots, instances: [\"127.0.0.1:1\"] }\n"), []string{"weight", "not a percentage"}, 4},
		{"weight as list", route("    pools:\n      - { name: a, weight: [1], instances: [\"127.0.0.1:1\"] }\n"), []string{"weight must be a number"}, 4},
		{"weights sum", route("    pools:\n      - { name: a, weight: 90, instances: [\"127.0.0.1:1\"] }\n      - { name: b, weight: 5, instances: [\"127.0.0.1:2\"] }\n"), []string{"routes[0](web).pools", "sum to 95%", "not 100"}, 3},
		{"no instances", route("    pools:\n      - { name: a, weight: 100, instances: [] }\n"), []string{"pools[0](a).instances", "no instances"}, 4},
		{"instance without port", route("    pools:\n      - name: a\n        weight: 100\n        instances: [\"127.0.0.1\"]\n"), []string{"pools[0](a).instances[0]", "needs host:port"}, 6},
		{"instance bad port", route("    pools:\n      - { name: a, weight: 100, instances: [\"127.0.0.1:99999\"] }\n"), []string{"instances[0]", "port \"99999\""}, 4},
		{"instance bad scheme", route("    pools:\n      - { name: a, weight: 100, instances: [\"ftp://127.0.0.1:21\"] }\n"), []string{"instances[0]", "scheme \"ftp\""}, 4},
		{"instance with query", route("    pools:\n      - { name: a, weight: 100, instances: [\"http://127.0.0.1:1/?x=1\"] }\n"), []string{"instances[0]", "only scheme, host, port"}, 4},
		{"duplicate instance", route("    pools:\n      - name: a\n        weight: 100\n        instances:\n          - 127.0.0.1:1\n          - http://127.0.0.1:1\n"), []string{"pools[0](a).instances[1]", "already instances[0]"}, 8},
		{"bad duration", "server: { idle_timeout: 5 seconds }\n" + route(twoPools), []string{"5 seconds", "not a duration"}, 1},
		{"negative duration", "upstream: { dial_timeout: -1s }\n" + route(twoPools), []string{"negative"}, 1},
		{"duration as number", "upstream: { dial_timeout: [1] }\n" + route(twoPools), []string{"duration must be a string"}, 1},
		{"bad listen", "listen: \"8080\"\n" + route(twoPools), []string{"listen", "not host:port"}, 1},
		{"bad listen port", "listen: \":80808\"\n" + route(twoPools), []string{"listen", "port \"80808\""}, 1},
		{"admin same as listen", "listen: \"127.0.0.1:9000\"\nadmin: {listen: \"127.0.0.1:9000\"}\n" + route(twoPools), []string{"admin.listen", "own port"}, 2},
		{"trusted proxy bad", "trusted_proxies: [\"10.0.0.0/33\"]\n" + route(twoPools), []string{"trusted_proxies[0]", "not a CIDR"}, 1},
		{"trusted proxy not ip", "trusted_proxies: [\"proxy.local\"]\n" + route(twoPools), []string{"trusted_proxies[0]", "not an IP"}, 1},
		{"bad balance", route("    balance: random\n" + twoPools), []string{"routes[0](web).balance", "not a balance policy"}, 3},
		{"sticky both", route("    sticky: {header: X-U, cookie: u}\n" + twoPools), []string{"routes[0](web).sticky", "not both"}, 3},
		{"bad header name", route("    force: {header: \"X Pool\"}\n" + twoPools), []string{"force.header", "not a valid header"}, 3},
		{"path prefix without slash", route("    match: {path_prefix: api}\n" + twoPools), []string{"match.path_prefix", "must start with /"}, 3},
		{"host with port", route("    match: {host: \"example.com:80\"}\n" + twoPools), []string{"match.host", "leave the port out"}, 3},
		{"string for int", "server: { max_header_bytes: big }\n" + route(twoPools), []string{`"big" is a string`, "whole number"}, 1},
		{"debounce too long", "reload: { debounce: 1m }\n" + route(twoPools), []string{"reload.debounce", "longer than 10s"}, 1},
		{"response head limit over 1 MiB", "upstream: { max_response_header_bytes: 2097152 }\n" + route(twoPools), []string{"upstream.max_response_header_bytes", "outside 1024 to 1048576"}, 1},
		{"response head limit too small", "upstream: { max_response_header_bytes: 100 }\n" + route(twoPools), []string{"upstream.max_response_header_bytes", "the default is 65536"}, 1},
		{"fast path not a bool", "upstream: { fast_path: maybe }\n" + route(twoPools), []string{`"maybe" is a string where true or false is expected`}, 1},
		{"poll too often", "reload: { poll_interval: 10ms }\n" + route(twoPools), []string{"reload.poll_interval", "shorter than 1s"}, 1},
		{"two documents", route(twoPools) + "---\nlisten: \":1\"\n", []string{"more than one YAML document"}, 0},
		{"cluster without name", "cluster: { member: m1 }\n" + route(twoPools), []string{"cluster.name", "required"}, 1},
		{"cluster bad name", "cluster: { name: \"a b\" }\n" + route(twoPools), []string{"cluster.name", "may only use"}, 1},
		{"cluster short ttl", "cluster: { name: edge, session_ttl: 1s }\n" + route(twoPools), []string{"cluster.session_ttl", "shorter than 2s"}, 1},
		{"cluster fractional ttl", "cluster: { name: edge, session_ttl: 2500ms }\n" + route(twoPools), []string{"cluster.session_ttl", "whole seconds"}, 1},
		{"cluster partition under ttl", "cluster: { name: edge, session_ttl: 10s, partition_timeout: 5s }\n" + route(twoPools), []string{"cluster.partition_timeout", "shorter than session_ttl"}, 1},
		{"cluster bad on_partition", "cluster: { name: edge, on_partition: panic }\n" + route(twoPools), []string{"cluster.on_partition", `"stable"`}, 1},
		{"cluster unknown key", "cluster: { name: edge, leader: me }\n" + route(twoPools), []string{"leader"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tc.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *Error, got %v", err)
			}
			for _, p := range ce.Problems {
				s := p.String()
				ok := true
				for _, w := range tc.want {
					ok = ok && strings.Contains(s, w)
				}
				if ok {
					if tc.line != 0 && p.Line != tc.line {
						t.Errorf("problem %q at line %d, want line %d", s, p.Line, tc.line)
					}
					return
				}
			}
			t.Errorf("no problem mentions %q; got:\n%v", tc.want, err)
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	yaml := `routes:
  - name: web
    pools:
      - { name: blue, weight: 80, instances: ["127.0.0.1"] }
      - { name: blue, weight: 10, instances: ["127.0.0.1:1", "127.0.0.1:1"] }
  - name: web
    match: {path_prefix: x}
    pools: []
`
	_, err := Parse("many.yaml", []byte(yaml))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatal(err)
	}
	if len(ce.Problems) < 6 {
		t.Fatalf("want every problem (at least 6), got %d:\n%v", len(ce.Problems), err)
	}
	for i := 1; i < len(ce.Problems); i++ {
		if ce.Problems[i].Line < ce.Problems[i-1].Line {
			t.Errorf("problems not in line order:\n%v", err)
		}
	}
	if !strings.HasPrefix(err.Error(), "config many.yaml is invalid (") {
		t.Errorf("message head: %q", err.Error())
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte(validYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	_, u, err := LoadSet(p)
	if err != nil || u.Config == nil || string(u.MainData) != validYAML {
		t.Fatalf("LoadSet: %v", err)
	}
	if _, _, err := LoadSet(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Errorf("missing file error should point at --config: %v", err)
	}
}

func TestShippedConfigIsValid(t *testing.T) {
	if _, _, err := LoadSet("../config.yaml"); err != nil {
		t.Fatal(err)
	}
}

func TestParseInstance(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9001":            "http://127.0.0.1:9001",
		"LocalHost:80":              "http://localhost:80",
		"https://api.internal:8443": "https://api.internal:8443",
		"http://[::1]:9000/base/":   "http://[::1]:9000/base",
	} {
		u, err := ParseInstance(in)
		if err != nil || u.String() != want {
			t.Errorf("ParseInstance(%q) = %v, %v; want %s", in, u, err, want)
		}
	}
}

// FuzzParse: the loader never panics, and whatever it accepts is a config
// the rest of canaryd can build from (weights sum to 100, instances parse).
func FuzzParse(f *testing.F) {
	f.Add([]byte(validYAML))
	f.Add([]byte(route(twoPools)))
	f.Add([]byte("routes: [{name: a, pools: [{name: b, weight: 100, instances: [\"h:1\"]}]}]"))
	f.Add([]byte("routes:\n- name: x\n  pools:\n  - {name: p, weight: 33.33, instances: [a:1]}\n  - {name: q, weight: 66.67, instances: [b:2]}\n"))
	f.Add([]byte("{{{"))
	f.Add([]byte("listen: \":8080\"\nroutes:\n  - name: web\n    pools:\n      - { name: blue weight: 100 }\n"))
	f.Add([]byte("listen: ':8080\nroutes: []\n"))
	f.Add([]byte("routes:\n  - name: web\n\tpools: []\n"))
	f.Add([]byte("cluster: {name: edge, member: m1, etcd: {endpoints: [\"127.0.0.1:2379\"]}, session_ttl: 3s, on_partition: hold}\n" + route(twoPools)))
	f.Add([]byte("routes: &a [*a]"))
	f.Add([]byte("trusted_proxies: [10.0.0.1]\n" + route("    force: { header: X-Canary-Pool, allow_from: [trusted_proxies, \"::1\", \"192.0.2.0/24\"], secret_header: X-S }\n"+twoPools)))
	f.Add([]byte(route("    mirror: { pool: green, percent: 5, compare: [status, body], max_body_bytes: 10, ignore_headers: [Date] }\n" + twoPools)))
	f.Add([]byte(route("    rollout: { stable: blue, canary: green, shadow: { percent: 20, min_requests: 5, compare: [headers] } }\n" + twoPools)))
	f.Add([]byte(route("    rollout: { stable: blue, canary: green, max_gathering: 5, tripwire: { window: 1s }, analysis: { confidence: 0.9, max_error_rate: 0.02, max_latency_p99: 1s } }\n" + twoPools)))
	f.Add([]byte(route("    pools:\n      - { name: blue, weight: 100, registered: true }\n      - { name: green, weight: 0, version: v2, instances: [\"127.0.0.1:2\"] }\n")))
	f.Add([]byte(route("    pools:\n      - { name: blue, weight: 100, discovery: { dns: _http._tcp.web.internal, resolver: \"127.0.0.1:53\", interval: 1s, empty_after: 2, max_drop_percent: 30, version: v1, scheme: https } }\n")))
	f.Add([]byte("server: { limits: { max_connections: 100, max_connections_per_client: 10, max_requests_in_flight: 50, max_requests_in_flight_per_client: 5 }, request_body_timeout: 5s, client_write_timeout: 5s, min_request_body_rate: { bytes_per_second: 100, grace: 2s }, http2: { max_read_frame_size: 16384 } }\nupstream: { request_buffering: { max_bytes: 1024 } }\n" + route(twoPools)))
	f.Add([]byte("admin: { listen: \"127.0.0.1:9901\", pprof: true }\n" + route(twoPools)))
	f.Add([]byte("trusted_proxies: [127.0.0.1]\n" + route("    sticky: { cookie: cd, set: true, ttl: 1h, secure: always, same_site: strict, domain: example.com, path: /app }\n    propagate: { header: X-Canary-Version }\n    rollout: { stable: blue, canary: green, segment: beta }\n    rules:\n      - { name: beta, match: { header: { X-Tenant: { in: [acme, globex] } }, cookie: { beta: { exact: \"yes\" } }, query: { canary: { prefix: \"1\" } }, source: [\"10.0.0.0/8\", \"::1\"] } }\n      - { name: ua, match: { header: { User-Agent: { regex: \".*Firefox/1[0-9]{2}.*\" } } }, pool: green }\n"+twoPools)))
	f.Add([]byte("tls: { ciphers: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_AES_128_CBC_SHA], curves: [X25519, P-256], session_ticket_rotation: 1h, ocsp_stapling: false }\n" + route(twoPools)))
	f.Add([]byte(route("    rollout:\n      stable: blue\n      canary: green\n      analysis: { dry_run: [error_rate], prometheus: { url: \"http://127.0.0.1:9090\", checks: [ { name: p, query: up, min: 1, dry_run: true } ] }, http: [ { name: h, method: post, url: \"http://127.0.0.1:8086/query?q=SELECT '{{canary}}' {{start}}\", headers: { X-K: { value: k } }, body: \"{{window}}\", json_path: \"$.results[0]['series'][-1]\", min: 0, max: 1, missing: fail, timeout: 1s, dry_run: true } ] }\n      gates:\n        - { name: smoke, at: pre_traffic, method: get, url: \"http://127.0.0.1:1/s\", headers: { X-A: b, X-B: { value: c } }, body: \"{{route}} {{next_weight}}\", timeout: 2s, retries: 0, dry_run: true }\n        - { name: page, at: rollback, url: \"https://127.0.0.1:2/\" }\n        - { name: ok, kind: approval, at: pre_promotion, expires: 1h, on_expiry: abort }\n        - { name: synth, at: post_promotion, url: \"http://127.0.0.1:3/\" }\n      bake: { duration: 10m }\n      rollback: { mode: gradual, steps: [80, 30, 0], interval: 2s, close_streams_after: 30s }\n      fast_revert: 24h\n      notify:\n        - { url: \"https://hooks.slack.com/services/T/B/X\", format: slack, labels: { service: web }, events: [rolled_back, gate, approval] }\n" + twoPools)))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("error is not a problem list: %v", err)
			}
			// A syntax error's line is found again by syntaxProblem: it
			// is in the file. (YAML breaks lines at LF, CR, NEL, LS and
			// PS: a bound on the lines it can count.)
			lines := 1 + bytes.Count(data, []byte{'\n'}) + bytes.Count(data, []byte{'\r'}) +
				bytes.Count(data, []byte("\u0085")) + bytes.Count(data, []byte("\u2028")) + bytes.Count(data, []byte("\u2029"))
			for _, p := range ce.Problems {
				if strings.HasPrefix(p.Msg, "YAML syntax: ") && p.Line > lines {
					t.Fatalf("problem on line %d of a file of at most %d lines: %s", p.Line, lines, p)
				}
			}
			return
		}
		if len(cfg.Routes) == 0 {
			t.Fatal("accepted a config without routes")
		}
		for _, r := range cfg.Routes {
			sum := 0
			for _, p := range r.Pools {
				sum += p.Weight.BasisPoints()
				for _, in := range p.Instances {
					if _, err := ParseInstance(in); err != nil {
						t.Fatalf("accepted bad instance %q", in)
					}
				}
				n := len(p.Instances)
				if p.Discovery != nil {
					n++
				}
				if p.Registered {
					n++
				}
				if n == len(p.Instances) && n == 0 || (n > len(p.Instances) && len(p.Instances) > 0) || (p.Discovery != nil && p.Registered) {
					t.Fatalf("accepted pool %q without exactly one source of instances", p.Name)
				}
				if d := p.Discovery; d != nil && (d.Interval.D() < 100*time.Millisecond || d.EmptyAfter < 1 || d.MaxDropPercent < 1 || d.MaxDropPercent > 100) {
					t.Fatalf("accepted discovery %+v", *d)
				}
			}
			if sum != 10000 {
				t.Fatalf("accepted weights summing to %d bp", sum)
			}
		}
		if cfg.Server.ReadHeaderTimeout.D() <= 0 || cfg.Upstream.DialTimeout.D() <= 0 {
			t.Fatal("defaults missing")
		}
	})
}

// A value that fails to decode is reported with everything else wrong in
// the file, and without a misleading "weights sum" on top.
func TestDecodeAndValidationProblemsTogether(t *testing.T) {
	_, err := Parse("mixed.yaml", []byte(`routes:
  - name: web
    pools:
      - { name: a, weight: 95.555, instances: ["127.0.0.1"] }
      - { name: a, weight: 3, instances: ["127.0.0.1:2"] }
`))
	msg := fmt.Sprint(err)
	for _, want := range []string{"more than two decimals", "needs host:port", "used twice"} {
		if !strings.Contains(msg, want) {
			t.Errorf("lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "sum to") {
		t.Errorf("reports a sum although a weight did not parse:\n%s", msg)
	}
}

func TestRestartNeeded(t *testing.T) {
	base, err := Parse("a.yaml", []byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	same, _ := Parse("b.yaml", []byte(strings.Replace(validYAML, "weight: 90", "weight: 80", 1)+"")) // invalid sum
	if same != nil {
		t.Fatal("expected the edited weights to be invalid")
	}
	routesOnly, _ := Parse("c.yaml", []byte(strings.Replace(strings.Replace(validYAML, "weight: 90", "weight: 80", 1), "weight: 10", "weight: 20", 1)))
	if d := RestartNeeded(base, routesOnly); len(d) != 0 {
		t.Errorf("weights only: restart needed for %v", d)
	}
	moved, _ := Parse("d.yaml", []byte(strings.Replace(validYAML, `listen: ":8080"`, `listen: ":8081"`, 1)))
	if d := RestartNeeded(base, moved); len(d) != 1 || !strings.HasPrefix(d[0], "listen (:8080 → :8081)") {
		t.Errorf("listen moved: %v", d)
	}
	// A block names only the settings that changed, by their keys.
	upstream, _ := Parse("e.yaml", []byte("upstream: { fast_path: false, idle_conn_timeout: 1m }\n"+validYAML))
	want := []string{"upstream.idle_conn_timeout (1m30s → 1m0s)", "upstream.fast_path (true → false)"}
	if d := RestartNeeded(base, upstream); !reflect.DeepEqual(d, want) {
		t.Errorf("upstream edited: %q, want %q", d, want)
	}
}

func TestRolloutDefaultsAndSteps(t *testing.T) {
	parse := func(ro string) *Rollout {
		t.Helper()
		cfg, err := Parse("r.yaml", []byte("routes:\n  - name: web\n    rollout: "+ro+"\n"+twoPools))
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Routes[0].Rollout
	}
	steps := func(ro *Rollout) string {
		var s []string
		for _, w := range ro.Steps {
			s = append(s, w.String())
		}
		return strings.Join(s, " ")
	}
	for ro, want := range map[string]string{
		"{stable: blue, canary: green}":                                "1 5 25 50 100",
		"{stable: blue, canary: green, steps: [10, 100]}":              "10 100",
		"{stable: blue, canary: green, step: 20}":                      "20 40 60 80 100",
		"{stable: blue, canary: green, step: 20, max: 50}":             "20 40 50 100",
		"{strategy: linear, stable: blue, canary: green}":              "10 20 30 40 50 60 70 80 90 100",
		"{strategy: linear, stable: blue, canary: green, step: 33.33}": "33.33 66.66 99.99 100",
		"{strategy: blue_green, stable: blue, canary: green}":          "0 100",
	} {
		if got := steps(parse(ro)); got != want {
			t.Errorf("%s: steps %s, want %s", ro, got, want)
		}
	}
	ro := parse("{stable: blue, canary: green, analysis: {compare_to_stable: {}}}")
	if ro.Interval.D() != 30*time.Second || ro.MinRequests != 200 || ro.FailureLimit != 2 || ro.Tripwire.Window.D() != 10*time.Second ||
		ro.Analysis.CompareToStable.Confidence != 0.99 || *ro.Analysis.CompareToStable.MinDifference != 0.005 {
		t.Errorf("defaults: %+v", ro)
	}
}

func TestInvalidRollouts(t *testing.T) {
	for ro, want := range map[string]string{
		"{stable: blue}":                                                                                                  "canary: missing",
		"{stable: blue, canary: nope}":                                                                                    `"nope" is not a pool`,
		"{stable: blue, canary: blue}":                                                                                    "both",
		"{stable: blue, canary: green, strategy: yolo}":                                                                   "not a strategy",
		"{stable: blue, canary: green, steps: [5, 5, 100]}":                                                               "does not rise",
		"{stable: blue, canary: green, steps: [5, 50]}":                                                                   "must be 100",
		"{stable: blue, canary: green, min_requests: -1}":                                                                 "no step is judged on no traffic",
		"{stable: blue, canary: green, interval: 1ms}":                                                                    "shorter than 100ms",
		"{stable: blue, canary: green, strategy: blue_green, steps: [10, 100]}":                                           "blue_green has no steps",
		"{stable: blue, canary: green, analysis: {max_error_rate: 2}}":                                                    "not a rate",
		"{stable: blue, canary: green, analysis: {compare_to_stable: {confidence: 1}}}":                                   "not in [0.5, 1)",
		"{stable: blue, canary: green, analysis: {prometheus: {url: localhost, checks: []}}}":                             "not an http(s) URL",
		"{stable: blue, canary: green, analysis: {prometheus: {url: \"http://p:9090\", checks: [{name: a, query: up}]}}}": "set min, max or both",
		"{stable: blue, canary: green, webhook: {url: \"ftp://x\"}}":                                                      "webhook.url",
	} {
		_, err := Parse("r.yaml", []byte("routes:\n  - name: web\n    rollout: "+ro+"\n"+twoPools))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want %q, got %v", ro, want, err)
		}
	}
	third := "routes:\n  - name: web\n    rollout: {stable: blue, canary: green}\n    pools:\n      - { name: blue, weight: 80, instances: [\"h:1\"] }\n      - { name: green, weight: 10, instances: [\"h:2\"] }\n      - { name: old, weight: 10, instances: [\"h:3\"] }\n"
	if _, err := Parse("r.yaml", []byte(third)); err == nil || !strings.Contains(err.Error(), "must have weight 0") {
		t.Errorf("third weighted pool: %v", err)
	}
}

func TestForceRestrictionsParsed(t *testing.T) {
	dir := t.TempDir()
	secret := dir + "/secret"
	if err := os.WriteFile(secret, []byte("  s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("f.yaml", []byte("trusted_proxies: [\"192.0.2.1\"]\n"+route("    force: { header: X-Canary-Pool, allow_from: [trusted_proxies, \"10.0.0.0/8\"], secret_file: "+secret+" }\n"+twoPools)))
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Routes[0].Force
	if got := fmt.Sprint(f.Allowed()); got != "[192.0.2.1/32 10.0.0.0/8]" {
		t.Errorf("allowed %s", got)
	}
	if f.Secret() != "s3cret" || f.SecretHeader != DefaultForceSecretHeader {
		t.Errorf("secret %q in %q", f.Secret(), f.SecretHeader)
	}
	cfg, _ = Parse("f.yaml", []byte(route("    force: { header: X-Canary-Pool }\n"+twoPools)))
	if f := cfg.Routes[0].Force; f.Allowed() != nil || f.Secret() != "" {
		t.Errorf("an open force header got restrictions: %v %q", f.Allowed(), f.Secret())
	}
}

// A discovery block's defaults, as docs/config.md gives them.
func TestDiscoveryDefaults(t *testing.T) {
	cfg, err := Parse("d.yaml", []byte(route("    pools:\n      - { name: a, weight: 100, discovery: { dns: web.internal, port: 8080 } }\n      - { name: b, weight: 0, discovery: { dns: _web._tcp.internal }, tls: {} }\n")))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Routes[0].Pools[0].Discovery
	if d.Interval.D() != 5*time.Second || d.EmptyAfter != 3 || d.MaxDropPercent != 50 || d.Scheme != "http" || d.Resolver != "" {
		t.Errorf("defaults: %+v", *d)
	}
	if s := cfg.Routes[0].Pools[1].Discovery.Scheme; s != "https" {
		t.Errorf("scheme of a pool with a tls block: %q", s)
	}
	if !cfg.Routes[0].Pools[0].Dynamic() {
		t.Error("a discovered pool is not dynamic")
	}
}

// Members whose affinity keys differ would not accept each other's
// cookies: the route's hash (config drift in a cluster) tells them apart,
// without carrying the key.
func TestStickyKeyIsInTheRouteHash(t *testing.T) {
	dir := t.TempDir()
	hash := func(key string) string {
		p := filepath.Join(dir, "k")
		if err := os.WriteFile(p, []byte(key), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Parse("t.yaml", []byte(route("    sticky: { cookie: cd, set: true, secret_file: "+p+" }\n"+twoPools)))
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Routes[0].Hash()
	}
	a, b, a2 := hash("0123456789abcdef-one"), hash("0123456789abcdef-two"), hash("0123456789abcdef-one\n")
	if a == b || a != a2 {
		t.Fatalf("hashes %s %s %s: want keys told apart, and the same key (trimmed) the same", a, b, a2)
	}
}
