package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"canaryd/internal/grpctest"
	"canaryd/internal/streamtest"
	"canaryd/rollout"

	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// streamServer is an instance of pool serving event streams and
// WebSockets; it returns its address.
func streamServer(t *testing.T, pool string) string {
	return strings.TrimPrefix(streamtest.Start(t, pool).URL, "http://")
}

// rawStream opens an event stream (ws false) or a WebSocket through addr
// to pool (forced), and returns a channel closed when it ends.
func rawStream(t *testing.T, addr, pool string, ws bool) <-chan struct{} {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if ws {
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Canary-Pool: %s\r\n\r\n", pool)
	} else {
		fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: web\r\nAccept: text/event-stream\r\nX-Canary-Pool: %s\r\n\r\n", pool)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || (resp.StatusCode != 101 && resp.StatusCode != 200) {
		t.Fatalf("stream to %s: %v %v", pool, resp, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 256)
		for {
			if ws {
				c.Write([]byte{'x'}) // the echo keeps the reads coming
				time.Sleep(50 * time.Millisecond)
			}
			if _, err := br.Read(buf); err != nil {
				return
			}
		}
	}()
	return done
}

// The built binary rolls back gradually (50%, then 20%, then 0%, a second
// apart), and a second after the canary reached 0% ends the streams it
// still served: its event stream's and WebSocket's connections close, its
// gRPC stream is reset while the client's HTTP/2 connection serves on; the
// stable pool's streams carry on.
func TestGradualRollbackClosesStreamsEndToEnd(t *testing.T) {
	long(t)
	blue, green := streamServer(t, "blue"), streamServer(t, "green")
	gBlue, gGreen := grpctest.Start(t, "blue", nil), grpctest.Start(t, "green", nil)
	rb := `rollback: { mode: gradual, steps: [50, 20, 0], interval: 1s, close_streams_after: 1s }`
	c := startCanaryd(t, writeConfig(t, fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
state_dir: %q
server: { h2c: true }
routes:
  - name: web
    match: { host: web }
    force: { header: X-Canary-Pool }
    rollout: { stable: blue, canary: green, steps: [60, 100], interval: 1h, %s }
    pools:
      - { name: blue, weight: 100, instances: [%q] }
      - { name: green, weight: 0, instances: [%q] }
  - name: grpc
    match: { host: grpc }
    force: { header: X-Canary-Pool }
    rollout: { stable: blue, canary: green, steps: [60, 100], interval: 1h, %s }
    pools:
      - { name: blue, weight: 100, protocol: h2c, instances: [%q] }
      - { name: green, weight: 0, protocol: h2c, instances: [%q] }
`, t.TempDir(), rb, blue, green, rb, gBlue.Addr, gGreen.Addr)))
	addr := strings.TrimPrefix(c.proxy, "http://")
	sseG, wsG := rawStream(t, addr, "green", false), rawStream(t, addr, "green", true)
	sseB, wsB := rawStream(t, addr, "blue", false), rawStream(t, addr, "blue", true)
	client := grpctest.Client(t, addr, "grpc")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dG := grpctest.Duplex(ctx, t, client, "green")
	gEnded := make(chan error, 1)
	go func() {
		for {
			if _, err := dG.Recv(); err != nil {
				gEnded <- err
				return
			}
		}
	}()

	for _, r := range []string{"web", "grpc"} {
		if out, err := runCLI(t, "abort", r, "--admin", c.admin); err != nil {
			t.Fatalf("abort %s: %v: %s", r, err, out)
		}
	}
	// The weights on the way down, as the status shows them.
	var seen []string
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		w := fmt.Sprint(c.status(t, "web").CanaryWeight)
		if len(seen) == 0 || seen[len(seen)-1] != w {
			seen = append(seen, w)
		}
		if w == "0" {
			break
		}
	}
	if strings.Join(seen, " ") != "50 20 0" {
		t.Errorf("canary weights on the way down: %v; want 50 20 0", seen)
	}
	select {
	case <-sseG:
	case <-time.After(10 * time.Second):
		t.Error("the canary's event stream is still open after the rollback")
	}
	select {
	case <-wsG:
	case <-time.After(5 * time.Second):
		t.Error("the canary's WebSocket is still open after the rollback")
	}
	select {
	case err := <-gEnded:
		if !strings.Contains(err.Error(), "RST_STREAM") {
			t.Errorf("the canary's gRPC stream ended with %v; want a reset", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the canary's gRPC stream is still open after the rollback")
	}
	select {
	case <-sseB:
		t.Error("the stable pool's event stream ended")
	case <-wsB:
		t.Error("the stable pool's WebSocket ended")
	default:
	}
	if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Errorf("a new call on the client's HTTP/2 connection: %v", err)
	}
}

// The built binary reverts fast: v1 is promoted away by v2, v3 comes and is
// aborted, and v1 deployed again (an edit of the file) goes straight to
// 100%, baking, instead of its first step.
func TestFastRevertEndToEnd(t *testing.T) {
	long(t)
	blue, green := backendProc(t, "blue"), backendProc(t, "green")
	cfg := func(bv, gv string) string {
		return fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
state_dir: %q
reload: { debounce: 50ms }
routes:
  - name: web
    rollout: { stable: blue, canary: green, steps: [10, 50, 100], interval: 1h, fast_revert: 24h, bake: { duration: 1h } }
    pools:
      - { name: blue, weight: 100, version: %s, instances: [%q] }
      - { name: green, weight: 0, version: %s, instances: [%q] }
`, "STATE", bv, blue, gv, green)
	}
	state := t.TempDir()
	path := writeConfig(t, strings.Replace(cfg("v1", "v2"), "STATE", state, 1))
	c := startCanaryd(t, path)
	write := func(bv, gv string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(strings.Replace(cfg(bv, gv), "STATE", state, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, cmd := range []string{"promote", "promote"} { // to 100% (baking), then past the bake
		if out, err := runCLI(t, cmd, "web", "--admin", c.admin); err != nil {
			t.Fatalf("%s: %v: %s", cmd, err, out)
		}
	}
	c.waitPhase(t, "web", rollout.Promoted, 5*time.Second)
	write("v3", "v2")
	eventually(t, 10*time.Second, "v3 as the canary", func() bool {
		st := c.status(t, "web")
		return st.CanaryVersion == "v3" && st.Phase == rollout.Progressing && st.CanaryWeight == 10
	})
	if out, err := runCLI(t, "abort", "web", "--admin", c.admin); err != nil {
		t.Fatalf("abort: %v: %s", err, out)
	}
	write("v1", "v2")
	eventually(t, 10*time.Second, "v1 reverted fast", func() bool {
		st := c.status(t, "web")
		return st.CanaryVersion == "v1" && st.Phase == rollout.Baking && st.CanaryWeight == 100 && strings.Contains(st.Reason, "fast revert")
	})
}

func eventually(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("%s: not within %v", what, within)
}
