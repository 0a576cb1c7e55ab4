package health

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// The standard gRPC health-checking protocol (grpc/grpc
// doc/health-checking.md): one unary call, spoken here without a gRPC
// library. The messages are tiny protobufs, encoded and read by hand:
//
//	message HealthCheckRequest  { string service = 1; }
//	message HealthCheckResponse { ServingStatus status = 1; } // SERVING = 1
const grpcHealthMethod = "/grpc.health.v1.Health/Check"

// grpcServing is HealthCheckResponse.ServingStatus SERVING.
const grpcServing = 1

var grpcServingStatus = map[uint64]string{0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}

// grpcCheck asks the instance for its (or cfg.GRPCService's) status.
func grpcCheck(ctx context.Context, client *http.Client, target *url.URL, cfg Config) string {
	u := *target
	u.Path += grpcHealthMethod
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(grpcHealthRequest(cfg.GRPCService)))
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", "canaryd-health")
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return fmt.Sprintf("gRPC health check: no answer within %v", cfg.Timeout)
		}
		return fmt.Sprintf("gRPC health check: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("gRPC health check: HTTP status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	if err != nil {
		return fmt.Sprintf("gRPC health check: reading the answer: %v", err)
	}
	code := resp.Trailer.Get("Grpc-Status")
	if code == "" {
		code = resp.Header.Get("Grpc-Status") // trailers-only
	}
	if code != "0" {
		msg := resp.Trailer.Get("Grpc-Message") + resp.Header.Get("Grpc-Message")
		return fmt.Sprintf("gRPC health check: grpc-status %q %s", code, msg)
	}
	status, err := grpcHealthStatus(body)
	if err != nil {
		return "gRPC health check: " + err.Error()
	}
	if status != grpcServing {
		name := grpcServingStatus[status]
		if name == "" {
			name = fmt.Sprint(status)
		}
		return "gRPC health check: " + name
	}
	return ""
}

// grpcHealthRequest is one length-prefixed HealthCheckRequest message.
func grpcHealthRequest(service string) []byte {
	var msg []byte
	if service != "" {
		msg = append(msg, 0x0a) // field 1, length-delimited
		msg = binary.AppendUvarint(msg, uint64(len(service)))
		msg = append(msg, service...)
	}
	out := []byte{0} // not compressed
	out = binary.BigEndian.AppendUint32(out, uint32(len(msg)))
	return append(out, msg...)
}

// grpcHealthStatus reads the status of one length-prefixed
// HealthCheckResponse (unknown fields skipped; a missing status is 0).
func grpcHealthStatus(b []byte) (uint64, error) {
	if len(b) < 5 {
		return 0, errors.New("answer shorter than a gRPC message")
	}
	if b[0] != 0 {
		return 0, errors.New("compressed answer (canaryd asked for none)")
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(n) > uint64(len(b)-5) {
		return 0, errors.New("answer cut short")
	}
	msg := b[5 : 5+n]
	status := uint64(0)
	for len(msg) > 0 {
		tag, k := binary.Uvarint(msg)
		if k <= 0 {
			return 0, errors.New("malformed answer")
		}
		msg = msg[k:]
		switch tag & 7 {
		case 0: // varint
			v, k := binary.Uvarint(msg)
			if k <= 0 {
				return 0, errors.New("malformed answer")
			}
			msg = msg[k:]
			if tag>>3 == 1 {
				status = v
			}
		case 2: // length-delimited
			l, k := binary.Uvarint(msg)
			if k <= 0 || l > uint64(len(msg)-k) {
				return 0, errors.New("malformed answer")
			}
			msg = msg[k+int(l):]
		case 1:
			if len(msg) < 8 {
				return 0, errors.New("malformed answer")
			}
			msg = msg[8:]
		case 5:
			if len(msg) < 4 {
				return 0, errors.New("malformed answer")
			}
			msg = msg[4:]
		default:
			return 0, errors.New("malformed answer")
		}
	}
	return status, nil
}
