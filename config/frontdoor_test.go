package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"canaryd/grpccode"
	"canaryd/internal/testcerts"
)

func TestFrontDoorConfigs(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "CA")
	cert, key := ca.WriteLeaf(t, dir, "site", "site.test")
	other, otherKey := ca.WriteLeaf(t, dir, "other", "other.test")
	caFile := ca.WriteCA(t, dir, "ca")
	junk := filepath.Join(dir, "junk.pem")
	testcerts.Write(t, junk, []byte("junk"))
	tlsBlock := fmt.Sprintf("tls: { cert_file: %s, key_file: %s }\n", cert, key)
	pool := func(extra string) string {
		return route("    pools:\n      - { name: a, weight: 100, instances: [\"127.0.0.1:9001\"]" + extra + " }\n")
	}
	tlsPool := func(extra string) string {
		return route("    pools:\n      - { name: a, weight: 100, instances: [\"https://127.0.0.1:9001\"]" + extra + " }\n")
	}
	for _, tc := range []struct {
		name, yaml, fail string
	}{
		{"tls", tlsBlock + pool(""), ""},
		{"sni certificates", fmt.Sprintf("tls: { certificates: [{cert_file: %s, key_file: %s}, {cert_file: %s, key_file: %s}], min_version: \"1.3\" }\n", cert, key, other, otherKey) + pool(""), ""},
		{"mtls", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, client_ca_file: %s, client_auth: verify_if_given }\n", cert, key, caFile) + pool(""), ""},
		{"redirect", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, redirect_http: \":8081\" }\n", cert, key) + pool(""), ""},
		{"mismatched pair", fmt.Sprintf("tls: { cert_file: %s, key_file: %s }\n", cert, otherKey) + pool(""), "does not match"},
		{"junk cert", fmt.Sprintf("tls: { cert_file: %s, key_file: %s }\n", junk, key) + pool(""), junk},
		{"missing key", fmt.Sprintf("tls: { cert_file: %s, key_file: %s }\n", cert, filepath.Join(dir, "nope.key")) + pool(""), "nope.key"},
		{"key without cert", fmt.Sprintf("tls: { key_file: %s }\n", key) + pool(""), "TLS is not on"},
		{"pair without key", fmt.Sprintf("tls: { certificates: [{cert_file: %s}] }\n", cert) + pool(""), "key_file: is missing"},
		{"min version 1.1", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, min_version: \"1.1\" }\n", cert, key) + pool(""), "use 1.2 or 1.3"},
		{"client auth mode", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, client_ca_file: %s, client_auth: maybe }\n", cert, key, caFile) + pool(""), "not a mode"},
		{"client auth without ca", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, client_auth: require }\n", cert, key) + pool(""), "needs tls.client_ca_file"},
		{"junk client ca", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, client_ca_file: %s }\n", cert, key, junk) + pool(""), "no PEM certificate"},
		{"h2c with tls", tlsBlock + "server: { h2c: true }\n" + pool(""), "remove server.h2c"},
		{"redirect on listen", fmt.Sprintf("listen: \":8443\"\ntls: { cert_file: %s, key_file: %s, redirect_http: \":8443\" }\n", cert, key) + pool(""), "its own port"},
		{"h2c", "server: { h2c: true }\n" + pool(", protocol: h2c"), ""},
		{"proxy protocol", "trusted_proxies: [10.0.0.0/8]\nserver: { proxy_protocol: true }\n" + pool(""), ""},
		{"proxy protocol untrusted", "server: { proxy_protocol: true }\n" + pool(""), "trusted_proxies"},
		{"streams", "server: { http2: { max_concurrent_streams: 0 } }\n" + pool(""), ""}, // 0 takes the default
		{"streams too many", "server: { http2: { max_concurrent_streams: 100000 } }\n" + pool(""), "not from 1 to 10000"},
		{"conn window", "server: { http2: { max_receive_buffer_per_connection: 20000 } }\n" + pool(""), "max_receive_buffer_per_stream"},
		{"ping", "server: { http2: { send_ping_timeout: 10ms } }\n" + pool(""), "under 1s"},
		{"frame size", "server: { http2: { max_read_frame_size: 65536 } }\n" + pool(""), ""},
		{"frame over window", "server: { http2: { max_read_frame_size: 1048576 } }\n" + pool(""), "breaks flow control"},
		{"frame under minimum", "server: { http2: { max_read_frame_size: 1000 } }\n" + pool(""), "not from 16384"},
		{"limits", "server: { limits: { max_connections: 1000, max_connections_per_client: 100, max_requests_in_flight: 500, max_requests_in_flight_per_client: 50 } }\n" + pool(""), ""},
		{"limits negative", "server: { limits: { max_connections: -1 } }\n" + pool(""), "outside 1 to 10000000"},
		{"limits per client above", "server: { limits: { max_connections: 10, max_connections_per_client: 20 } }\n" + pool(""), "above max_connections"},
		{"limits requests per client above", "server: { limits: { max_requests_in_flight: 10, max_requests_in_flight_per_client: 20 } }\n" + pool(""), "above max_requests_in_flight"},
		{"body timeout", "server: { request_body_timeout: 5s, client_write_timeout: 30s }\n" + pool(""), ""},
		{"body timeout tiny", "server: { request_body_timeout: 1ms }\n" + pool(""), "under 100ms"},
		{"write timeout tiny", "server: { client_write_timeout: 1ms }\n" + pool(""), "under 100ms"},
		{"body rate", "server: { min_request_body_rate: { bytes_per_second: 1024, grace: 5s } }\n" + pool(""), ""},
		{"body rate negative", "server: { min_request_body_rate: { bytes_per_second: -1 } }\n" + pool(""), "0 (off) or more"},
		{"body rate grace alone", "server: { min_request_body_rate: { grace: 5s } }\n" + pool(""), "set the rate"},
		{"buffering off", "upstream: { request_buffering: { max_bytes: 0 } }\n" + pool(""), ""},
		{"buffering huge", "upstream: { request_buffering: { max_bytes: 1073741824 } }\n" + pool(""), "16 MiB"},
		{"ciphers", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, ciphers: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256], curves: [X25519, P-256] }\n", cert, key) + pool(""), ""},
		{"ciphers loosened", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, ciphers: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA] }\n", cert, key) + pool(""), ""},
		{"cipher unknown", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, ciphers: [TLS_FAST] }\n", cert, key) + pool(""), "not a cipher suite Go knows"},
		{"cipher tls13", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, ciphers: [TLS_AES_128_GCM_SHA256] }\n", cert, key) + pool(""), "not configurable"},
		{"ciphers with 1.3", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, min_version: \"1.3\", ciphers: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256] }\n", cert, key) + pool(""), "remove tls.ciphers"},
		{"curve unknown", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, curves: [P-192] }\n", cert, key) + pool(""), "not a curve"},
		{"pprof on loopback", "admin: { pprof: true }\n" + pool(""), ""},
		{"pprof exposed without token", "admin: { listen: \"0.0.0.0:9901\", pprof: true }\n" + pool(""), "set admin.token_file"},
		{"ticket rotation", fmt.Sprintf("tls: { cert_file: %s, key_file: %s, session_ticket_rotation: 10ms }\n", cert, key) + pool(""), "under 1s"},
		{"protocol", pool(", protocol: h3"), "not a protocol"},
		{"h2 to http", pool(", protocol: h2"), "use h2c"},
		{"h2c to https", tlsPool(", protocol: h2c"), "use h2 for https"},
		{"h2 to https", tlsPool(", protocol: h2"), ""},
		{"pool tls", tlsPool(fmt.Sprintf(", tls: {ca_file: %s, server_name: inst.test, cert_file: %s, key_file: %s}", caFile, cert, key)), ""},
		{"pool tls on http", pool(fmt.Sprintf(", tls: {ca_file: %s}", caFile)), "applies to https://"},
		{"pool tls junk ca", tlsPool(fmt.Sprintf(", tls: {ca_file: %s}", junk)), "no PEM certificate"},
		{"pool tls half pair", tlsPool(fmt.Sprintf(", tls: {cert_file: %s}", cert)), "set both or neither"},
		{"grpc codes", "grpc: { error_codes: [unavailable, 13] }\n" + pool(""), ""},
		{"grpc bad code", "grpc: { error_codes: [UNAVAILABLE, SLOW] }\n" + pool(""), "not a gRPC status code"},
		{"grpc probe", pool(", protocol: h2c, health: {active: {grpc: true, grpc_service: svc}}"), ""},
		{"grpc probe http1", pool(", health: {active: {grpc: true}}"), "need HTTP/2"},
		{"grpc probe route http1", route("    health: {active: {grpc: true}}\n    pools:\n      - { name: a, weight: 100, instances: [\"127.0.0.1:9001\"] }\n"), "need HTTP/2"},
		{"grpc probe with path", pool(", protocol: h2c, health: {active: {grpc: true, path: /x}}"), "remove path"},
		{"grpc service alone", pool(", protocol: h2c, health: {active: {grpc_service: svc}}"), "set grpc: true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.yaml))
			if tc.fail == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.fail) {
				t.Fatalf("err = %v; want one containing %q", err, tc.fail)
			}
		})
	}
}

func TestGRPCErrorCodesParsed(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte("grpc: { error_codes: [unavailable, 13] }\n"+route(twoPools)))
	if err != nil {
		t.Fatal(err)
	}
	if want := grpccode.Of(grpccode.Unavailable, grpccode.Internal); cfg.GRPC.Errors() != want {
		t.Fatalf("Errors() = %b, want %b", cfg.GRPC.Errors(), want)
	}
	cfg2, _ := Parse("t.yaml", []byte("grpc: { error_codes: [unavailable] }\n"+route(twoPools)))
	if d := RestartNeeded(cfg, cfg2); len(d) != 1 || !strings.HasPrefix(d[0], "grpc.error_codes") {
		t.Fatalf("RestartNeeded = %v", d)
	}
}
