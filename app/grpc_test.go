package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"canaryd/config"
	"canaryd/internal/grpctest"
	"canaryd/internal/testcerts"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func dialGRPC(t *testing.T, addr string, creds credentials.TransportCredentials) testpb.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

// gRPC end to end through the TLS listener (ALPN h2) to an h2c pool and to
// an h2 pool over TLS: unary, server-streaming and full-duplex calls, the
// instance's trailers intact, and its error codes as the client's.
func TestGRPCThroughProxy(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "CA")
	cf, kf := ca.WriteLeaf(t, dir, "site", "plain.test", "secure.test")
	plain := grpctest.Start(t, "plain", nil)
	ic, ik := ca.Leaf(t, "inst.test")
	pair, _ := tls.X509KeyPair(ic, ik)
	secure := grpctest.Start(t, "secure", &tls.Config{Certificates: []tls.Certificate{pair}})
	r := startFileRig(t, dir, fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
tls: { cert_file: %s, key_file: %s }
routes:
  - name: plain
    match: { host: plain.test }
    pools: [{ name: a, weight: 100, protocol: h2c, instances: ["%s"] }]
  - name: secure
    match: { host: secure.test }
    pools:
      - { name: a, weight: 100, protocol: h2, instances: ["https://%s"], tls: { ca_file: %s, server_name: inst.test } }
`, cf, kf, plain.Addr, secure.Addr, ca.WriteCA(t, dir, "ca")))
	for _, be := range []*grpctest.Server{plain, secure} {
		t.Run(be.Name, func(t *testing.T) {
			creds := credentials.NewTLS(&tls.Config{RootCAs: ca.Pool})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// The route is chosen by :authority (the host).
			cc := dialAuthority(t, r.srv.ProxyAddr().String(), be.Name+".test", creds)
			var trailer metadata.MD
			resp, err := cc.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hi")}}, grpc.Trailer(&trailer))
			if err != nil || string(resp.GetPayload().GetBody()) != be.Name || resp.GetUsername() != "hi" {
				t.Fatalf("unary: %v %v", resp, err)
			}
			if got := trailer.Get("x-served-by"); len(got) != 1 || got[0] != be.Name {
				t.Errorf("unary trailer x-served-by = %v, want [%s]", got, be.Name)
			}
			stream, err := cc.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: make([]*testpb.ResponseParameters, 3)})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for {
				_, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("server stream: %v", err)
				}
				n++
			}
			if n != 3 || stream.Trailer().Get("x-served-by")[0] != be.Name {
				t.Errorf("server stream: %d messages, trailer %v", n, stream.Trailer())
			}
			duplex, err := cc.FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 5; i++ { // each answer comes before the next message is sent
				duplex.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(fmt.Sprint(i))}})
				got, err := duplex.Recv()
				if err != nil || string(got.GetPayload().GetBody()) != fmt.Sprintf("%s:%d", be.Name, i) {
					t.Fatalf("duplex message %d: %v %v", i, got, err)
				}
			}
			duplex.CloseSend()
			if _, err := duplex.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("duplex end: %v", err)
			}
			be.FailWith(codes.Unavailable)
			defer be.FailWith(codes.OK)
			_, err = cc.UnaryCall(ctx, &testpb.SimpleRequest{})
			if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "fails on purpose") {
				t.Errorf("failing instance: %v, want UNAVAILABLE with its message", err)
			}
		})
	}
}

// dialAuthority dials addr, sending authority as :authority (and SNI), so
// that host routes choose the pool.
func dialAuthority(t *testing.T, addr, authority string, creds credentials.TransportCredentials) testpb.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds), grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

// grpc-status decides: a call that fails with a code of grpc.error_codes
// is an error in the metrics (canaryd_grpc_requests_total by code), in the
// window the rollouts judge and in passive health (UNAVAILABLE is a
// gateway failure: five in a row eject the instance), though its HTTP
// status is 200; NOT_FOUND, the client's problem, is not. Errors in the
// trailers after streamed messages count the same.
func TestGRPCStatusCounts(t *testing.T) {
	bad, good := grpctest.Start(t, "bad", nil), grpctest.Start(t, "good", nil)
	r := startFileRig(t, t.TempDir(), fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
server: { h2c: true }
routes:
  - name: rpc
    health: { passive: { consecutive_failures: 5, eject_for: 1m } }
    pools: [{ name: a, weight: 100, protocol: h2c, instances: ["%s", "%s"] }]
`, bad.Addr, good.Addr))
	client := dialGRPC(t, r.srv.ProxyAddr().String(), insecure.NewCredentials())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bad.FailWith(codes.NotFound)
	for i := 0; i < 4; i++ { // two each (round robin): NOT_FOUND is no error
		client.UnaryCall(ctx, &testpb.SimpleRequest{})
	}
	bad.FailWith(codes.Unavailable)
	for i := 0; i < 6; i++ { // three UNAVAILABLE from bad
		client.UnaryCall(ctx, &testpb.SimpleRequest{})
	}
	bad.FailWith(codes.Internal)
	stream, _ := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: make([]*testpb.ResponseParameters, 2)})
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
	stats := r.srv.requests.Pool("rpc", "a").Now()
	codesSeen := series(scrape(t, r.admin)["canaryd_grpc_requests_total"], "grpc_code")
	httpCodes := series(scrape(t, r.admin)["canaryd_requests_total"], "code")
	t.Logf("grpc codes %v, http codes %v, window: %d requests %d errors", codesSeen, httpCodes, stats.Requests, stats.Errors)
	// The stream went to bad or good (round robin: the 11th call).
	if codesSeen["NOT_FOUND"] != 2 || codesSeen["UNAVAILABLE"] != 3 || codesSeen["OK"]+codesSeen["INTERNAL"] != 6 || httpCodes["200"] != 11 {
		t.Errorf("canaryd_grpc_requests_total %v, canaryd_requests_total %v", codesSeen, httpCodes)
	}
	if want := uint64(3 + codesSeen["INTERNAL"]); stats.Requests != 11 || stats.Errors != want {
		t.Errorf("window: %d requests, %d errors; want 11 and %d", stats.Requests, stats.Errors, want)
	}
	// Two more UNAVAILABLE from bad make five gateway failures in a row.
	bad.FailWith(codes.Unavailable)
	for i := 0; i < 6 && r.srv.router.Load().Route("rpc").Pools[0].Instances[0].Available(); i++ {
		client.UnaryCall(ctx, &testpb.SimpleRequest{})
		client.UnaryCall(ctx, &testpb.SimpleRequest{})
	}
	if r.instance("a", bad.Addr).Available() {
		t.Fatal("five UNAVAILABLE calls in a row did not eject the instance")
	}
	for i := 0; i < 10; i++ {
		if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("call %d after the ejection: %v (only the healthy instance should serve)", i, err)
		}
	}
}

// Active probes with grpc.health.v1.Health/Check: NOT_SERVING takes an
// instance out (after fall probes), SERVING brings it back (after rise),
// and a service name is asked about by name.
func TestGRPCHealthProbes(t *testing.T) {
	a, b := grpctest.Start(t, "a", nil), grpctest.Start(t, "b", nil)
	a.Health.SetServingStatus("shop", healthpb.HealthCheckResponse_SERVING)
	b.Health.SetServingStatus("shop", healthpb.HealthCheckResponse_SERVING)
	r := startFileRig(t, t.TempDir(), fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
routes:
  - name: rpc
    pools:
      - name: p
        weight: 100
        protocol: h2c
        instances: ["%s", "%s"]
        health: { active: { grpc: true, grpc_service: shop, interval: 100ms, timeout: 50ms, rise: 2, fall: 2 } }
`, a.Addr, b.Addr))
	r.waitAvailable("p", a.Addr, true, 3*time.Second)
	a.Health.SetServingStatus("shop", healthpb.HealthCheckResponse_NOT_SERVING)
	d := r.waitAvailable("p", a.Addr, false, 3*time.Second)
	if !r.instance("p", b.Addr).Available() {
		t.Fatal("b went out too")
	}
	a.Health.SetServingStatus("shop", healthpb.HealthCheckResponse_SERVING)
	u := r.waitAvailable("p", a.Addr, true, 3*time.Second)
	t.Logf("NOT_SERVING took a out in %v, SERVING brought it back in %v", d, u)
	// Shutdown answers NOT_SERVING for every service: b goes too.
	b.Health.Shutdown()
	r.waitAvailable("p", b.Addr, false, 3*time.Second)
}

// The access log has each call's grpc-status, and logs every failed call
// whatever the sampling (as it does answers >= 500).
func TestGRPCAccessLog(t *testing.T) {
	be := grpctest.Start(t, "a", nil)
	core, logs := observer.New(zapcore.InfoLevel)
	cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "off" }
server: { h2c: true }
access_log: { enabled: true, sample: 1000 }
routes:
  - name: rpc
    pools: [{ name: a, weight: 100, protocol: h2c, instances: [%q] }]
`, be.Addr)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	serveFor(t, srv)
	client := dialGRPC(t, srv.ProxyAddr().String(), insecure.NewCredentials())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		client.UnaryCall(ctx, &testpb.SimpleRequest{})
	}
	be.FailWith(codes.Unavailable)
	for i := 0; i < 2; i++ {
		client.UnaryCall(ctx, &testpb.SimpleRequest{})
	}
	var lines []observer.LoggedEntry
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if lines = logs.FilterLoggerName("access").All(); len(lines) >= 2 {
			break
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d access lines for 3 OK and 2 failed calls at sample 1000; want the 2 failed ones", len(lines))
	}
	for _, l := range lines {
		if f := l.ContextMap(); f["grpc_status"] != "UNAVAILABLE" || f["status"] != int64(200) {
			t.Errorf("line %v; want status 200 and grpc_status UNAVAILABLE", f)
		}
	}
}
