package app

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"canaryd/internal/grpctest"
	"canaryd/rollout"

	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// openSSE opens an event stream through the proxy, forced to pool, and
// returns its connection and reader (past the headers).
func openSSE(t *testing.T, addr, pool string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: web\r\nAccept: text/event-stream\r\nX-Canary-Pool: %s\r\n\r\n", pool)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("event stream to %s: %v %v", pool, resp, err)
	}
	return c, br
}

// openWS opens a WebSocket through the proxy, forced to pool.
func openWS(t *testing.T, addr, pool string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Canary-Pool: %s\r\n\r\n", pool)
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("websocket to %s: %v %v", pool, resp, err)
	}
	return &bufConn{c, br}
}

// ended waits for a stream to end: a read that errors (EOF, reset) within
// d. For an event stream, the events before the end are read through.
func ended(c net.Conn, r interface{ Read([]byte) (int, error) }, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 512)
	for {
		if _, err := r.Read(buf); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// alive: the stream still answers: an event arrives, or the WebSocket
// echoes a byte.
func alive(t *testing.T, c net.Conn, r interface{ Read([]byte) (int, error) }, ws bool) bool {
	t.Helper()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	defer c.SetDeadline(time.Time{})
	if ws {
		if _, err := c.Write([]byte{'x'}); err != nil {
			return false
		}
	}
	var b [1]byte
	_, err := r.Read(b[:])
	return err == nil
}

// After a rollback with rollback.close_streams_after, the streams the
// canary still serves end: an event stream's and a WebSocket's HTTP/1.1
// connections close, a gRPC stream is reset while its HTTP/2 connection
// carries on (a new call on it works). The stable pool's streams stay.
func TestRollbackClosesTheCanarysStreams(t *testing.T) {
	blue, green := streamBackend(t), streamBackend(t)
	gBlue, gGreen := grpctest.Start(t, "blue", nil), grpctest.Start(t, "green", nil)
	r := startFileRig(t, t.TempDir(), fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
server: { h2c: true, idle_timeout: 1m }
state_dir: %q
routes:
  - name: web
    match: { host: web }
    force: { header: X-Canary-Pool }
    rollout: { stable: blue, canary: green, steps: [50, 100], interval: 1h, rollback: { close_streams_after: 1s } }
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
  - name: grpc
    match: { host: grpc }
    force: { header: X-Canary-Pool }
    rollout: { stable: blue, canary: green, steps: [50, 100], interval: 1h, rollback: { close_streams_after: 1s } }
    pools:
      - { name: blue, weight: 100, protocol: h2c, instances: [%q] }
      - { name: green, weight: 0, protocol: h2c, instances: [%q] }
`, t.TempDir(), blue.URL, green.URL, gBlue.Addr, gGreen.Addr))
	addr := r.srv.ProxyAddr().String()
	sseG, sseGr := openSSE(t, addr, "green")
	sseB, sseBr := openSSE(t, addr, "blue")
	wsG, wsB := openWS(t, addr, "green"), openWS(t, addr, "blue")

	client := grpctest.Client(t, addr, "grpc")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dG, dB := grpctest.Duplex(ctx, t, client, "green"), grpctest.Duplex(ctx, t, client, "blue")
	if n := r.srv.streams.Open("web", "green"); n != 2 {
		t.Fatalf("%d streams of web's green kept; want 2 (the event stream and the WebSocket)", n)
	}

	abortAt := time.Now()
	for _, route := range []string{"web", "grpc"} {
		if _, err := r.srv.Control(route, rollout.Abort); err != nil {
			t.Fatal(err)
		}
	}
	if !ended(sseG, sseGr, 10*time.Second) {
		t.Error("the canary's event stream is still open 10s after the rollback")
	}
	if took := time.Since(abortAt); took < 900*time.Millisecond {
		t.Errorf("the canary's event stream ended %v after the rollback, before close_streams_after (1s)", took)
	}
	if !ended(wsG, wsG, 5*time.Second) {
		t.Error("the canary's WebSocket is still open after the rollback")
	}
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := dG.Recv(); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		t.Logf("the canary's gRPC stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Error("the canary's gRPC stream is still open after the rollback")
	}
	// The stable pool's streams carry on, and the client's HTTP/2
	// connection too: a new call on it works.
	if !alive(t, sseB, sseBr, false) || !alive(t, wsB, wsB, true) {
		t.Error("a stream to the stable pool ended")
	}
	if err := dB.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	if got, err := dB.Recv(); err != nil || string(got.GetPayload().GetBody()) != "blue:1" {
		t.Errorf("the stable pool's gRPC stream after the rollback: %v %v", got, err)
	}
	if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Errorf("a new call on the same HTTP/2 connection: %v", err)
	}
	st, _ := r.srv.rollouts.Status("web")
	if last := st.History[len(st.History)-1]; !strings.Contains(last.Reason, "closed 2 streams") {
		t.Errorf("history: %s", last.Reason)
	}
}

// A route whose rollout does not close streams keeps none: its requests
// are not looked at.
func TestStreamsKeptOnlyWhereClosed(t *testing.T) {
	blue, green := streamBackend(t), streamBackend(t)
	r := startFileRig(t, t.TempDir(), fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
state_dir: %q
routes:
  - name: web
    force: { header: X-Canary-Pool }
    rollout: { stable: blue, canary: green, steps: [50, 100], interval: 1h }
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
`, t.TempDir(), blue.URL, green.URL))
	openSSE(t, r.srv.ProxyAddr().String(), "green")
	if n := r.srv.streams.Open("web", "green"); n != 0 {
		t.Errorf("%d streams kept on a route without rollback.close_streams_after", n)
	}
}
