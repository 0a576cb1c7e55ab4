// Package grpctest runs real gRPC servers (google.golang.org/grpc) for
// tests: the interop TestService (unary, server-streaming and full-duplex
// calls) and the standard health service, on a loopback socket, over h2c or
// TLS. Only tests import it.
package grpctest

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Server is one gRPC instance. Its answers carry Name, so a test can tell
// which pool served a call.
type Server struct {
	testpb.UnimplementedTestServiceServer
	Name string
	Addr string
	// Health is the standard health service; set a status with
	// Health.SetServingStatus.
	Health *health.Server
	// fail, when not OK, is the code calls end with: every call, or one
	// in failEvery.
	fail      atomic.Uint32
	failEvery atomic.Int64
	Calls     atomic.Int64
	srv       *grpc.Server
}

// Start serves on 127.0.0.1:0 until the test ends; tlsCfg nil serves h2c
// (HTTP/2 with prior knowledge, as grpc-go does without credentials).
func Start(t testing.TB, name string, tlsCfg *tls.Config) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	s := &Server{Name: name, Addr: ln.Addr().String(), Health: health.NewServer(), srv: grpc.NewServer(opts...)}
	testpb.RegisterTestServiceServer(s.srv, s)
	healthpb.RegisterHealthServer(s.srv, s.Health)
	go s.srv.Serve(ln)
	t.Cleanup(s.srv.Stop)
	return s
}

// FailWith makes every call end with code (codes.OK: succeed again).
func (s *Server) FailWith(code codes.Code) { s.FailEvery(code, 1) }

// FailEvery makes one call in n end with code.
func (s *Server) FailEvery(code codes.Code, n int64) {
	s.failEvery.Store(n)
	s.fail.Store(uint32(code))
}

func (s *Server) failure(call int64) error {
	if c := codes.Code(s.fail.Load()); c != codes.OK && call%max(s.failEvery.Load(), 1) == 0 {
		return status.Error(c, s.Name+" fails on purpose")
	}
	return nil
}

// UnaryCall answers with the server's name as the payload, and sets a
// trailer of its own (which must reach the client).
func (s *Server) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	call := s.Calls.Add(1)
	grpc.SetTrailer(ctx, metadata.Pairs("x-served-by", s.Name))
	if err := s.failure(call); err != nil {
		return nil, err
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte(s.Name)}, Username: string(in.GetPayload().GetBody())}, nil
}

// StreamingOutputCall sends one message per response parameter, then ends
// with the failure code if one is set (after the messages: the error is
// in the trailers only).
func (s *Server) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	call := s.Calls.Add(1)
	for range in.GetResponseParameters() {
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte(s.Name)}}); err != nil {
			return err
		}
	}
	stream.SetTrailer(metadata.Pairs("x-served-by", s.Name))
	return s.failure(call)
}

// FullDuplexCall echoes each message's payload as it comes, until the
// client closes its side.
func (s *Server) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	call := s.Calls.Add(1)
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return s.failure(call)
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: append([]byte(s.Name+":"), in.GetPayload().GetBody()...)}}); err != nil {
			return err
		}
	}
}

// Duplex opens a full-duplex call through a client, forced to pool by the
// x-canary-pool metadata (a route's force header), and checks that pool
// echoes its first message.
func Duplex(ctx context.Context, t testing.TB, client testpb.TestServiceClient, pool string) testpb.TestService_FullDuplexCallClient {
	t.Helper()
	s, err := client.FullDuplexCall(metadata.AppendToOutgoingContext(ctx, "x-canary-pool", pool))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("0")}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Recv(); err != nil || string(got.GetPayload().GetBody()) != pool+":0" {
		t.Fatalf("duplex call to %s: %v %v", pool, got, err)
	}
	return s
}

// Client dials addr over h2c, sending authority as :authority (the host a
// proxy routes by); the connection closes at the test's end.
func Client(t testing.TB, addr, authority string) testpb.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}
