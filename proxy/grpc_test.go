package proxy

import (
	"net/http"
	"testing"

	"canaryd/balancer"
	"canaryd/grpccode"
)

func TestGRPCAnswers(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/grpc": true, "application/grpc+proto": true, "application/grpc;charset=utf-8": true,
		"application/grpc-web": false, "application/grpcx": false, "text/plain": false, "": false,
	} {
		if got := isGRPC(http.Header{"Content-Type": {ct}}); got != want {
			t.Errorf("isGRPC(%q) = %v", ct, got)
		}
	}
	for _, tc := range []struct {
		header, trailer string
		want            grpccode.Code
	}{
		{"", "0", grpccode.OK},
		{"", "14", grpccode.Unavailable},
		{"13", "", grpccode.Internal}, // trailers-only
		{"0", "4", grpccode.DeadlineExceeded},
		{"", "", grpccode.Unknown}, // none at all
		{"", "99", grpccode.Unknown},
		{"", "x", grpccode.Unknown},
	} {
		resp := &http.Response{Header: http.Header{}, Trailer: http.Header{}}
		if tc.header != "" {
			resp.Header.Set("Grpc-Status", tc.header)
		}
		if tc.trailer != "" {
			resp.Trailer.Set("Grpc-Status", tc.trailer)
		}
		if got := grpcStatus(resp); got != tc.want {
			t.Errorf("header %q trailer %q: %v, want %v", tc.header, tc.trailer, got, tc.want)
		}
	}
	o := Outcome{Status: 200, GRPC: grpccode.Unavailable, IsGRPC: true, GRPCFailed: true, Instance: &balancer.Instance{}}
	if o.Counted() != 503 || !o.GatewayFailure() {
		t.Errorf("a failed UNAVAILABLE call counts as %d (gateway failure %v), want 503 and true", o.Counted(), o.GatewayFailure())
	}
	o.GRPC = grpccode.Internal
	if o.Counted() != 500 || o.GatewayFailure() {
		t.Errorf("INTERNAL counts as %d", o.Counted())
	}
	o.GRPCFailed = false
	if o.Counted() != 200 {
		t.Errorf("a code outside the error set counts as %d", o.Counted())
	}
}
