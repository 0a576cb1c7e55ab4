package health

import (
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

// The hand-written messages agree with the generated protobuf code.
func TestGRPCHealthMessages(t *testing.T) {
	for _, svc := range []string{"", "shop", string(make([]byte, 300))} {
		var req healthpb.HealthCheckRequest
		b := grpcHealthRequest(svc)
		if err := proto.Unmarshal(b[5:], &req); err != nil || req.GetService() != svc || int(b[4])+int(b[3])<<8 != len(b)-5 {
			t.Errorf("request for %q: %v %q", svc, err, req.GetService())
		}
	}
	for _, st := range []healthpb.HealthCheckResponse_ServingStatus{0, 1, 2, 3} {
		msg, _ := proto.Marshal(&healthpb.HealthCheckResponse{Status: st})
		frame := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
		if got, err := grpcHealthStatus(frame); err != nil || got != uint64(st) {
			t.Errorf("status %v: got %d, %v", st, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {0, 0, 0}, {1, 0, 0, 0, 0}, {0, 0, 0, 0, 9, 8}, {0, 0, 0, 0, 2, 0x08, 0x80}, {0, 0, 0, 0, 1, 0x0f}} {
		if _, err := grpcHealthStatus(bad); err == nil {
			t.Errorf("%x: no error", bad)
		}
	}
	// Unknown fields are skipped.
	if got, err := grpcHealthStatus([]byte{0, 0, 0, 0, 6, 0x12, 0x01, 'x', 0x08, 0x01, 0x18}); err == nil || got != 0 {
		// 0x18 is field 3 varint with no value: malformed.
		t.Errorf("truncated varint: %d %v", got, err)
	}
	if got, err := grpcHealthStatus([]byte{0, 0, 0, 0, 5, 0x12, 0x01, 'x', 0x08, 0x01}); err != nil || got != 1 {
		t.Errorf("unknown field then status: %d %v", got, err)
	}
}

// FuzzGRPCHealthStatus: any answer is read without a panic, and agrees
// with the protobuf library whenever both accept a message.
func FuzzGRPCHealthStatus(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 2, 0x08, 0x01})
	f.Add([]byte{0, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 0, 5, 0x12, 0x01, 'x', 0x08, 0x02})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := grpcHealthStatus(b)
		if err != nil || len(b) < 5 {
			return
		}
		var resp healthpb.HealthCheckResponse
		n := int(b[1])<<24 | int(b[2])<<16 | int(b[3])<<8 | int(b[4])
		if proto.Unmarshal(b[5:5+n], &resp) == nil && uint64(resp.GetStatus()) != got && got < 1<<31 {
			t.Fatalf("status %d, protobuf says %d", got, resp.GetStatus())
		}
	})
}
