package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canaryd/internal/grpctest"
	"canaryd/internal/testcerts"
	"canaryd/rollout"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// grpcLoad makes unary calls from n clients until halted, counting them by
// the pool that answered and the failed ones.
type grpcLoad struct {
	stop           chan struct{}
	wg             sync.WaitGroup
	total, failed  atomic.Int64
	blue, green    atomic.Int64
	cancel         context.CancelFunc
	firstFailed    atomic.Value
	conns          []*grpc.ClientConn
	creds          credentials.TransportCredentials
	authority, tgt string
}

func startGRPCLoad(t *testing.T, target string, creds credentials.TransportCredentials, n int) *grpcLoad {
	t.Helper()
	g := &grpcLoad{stop: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	for i := 0; i < n; i++ {
		cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		g.conns = append(g.conns, cc)
		client := testpb.NewTestServiceClient(cc)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			for {
				select {
				case <-g.stop:
					return
				default:
				}
				cctx, done := context.WithTimeout(ctx, 5*time.Second)
				resp, err := client.UnaryCall(cctx, &testpb.SimpleRequest{})
				done()
				g.total.Add(1)
				switch {
				case err != nil:
					g.failed.Add(1)
					g.firstFailed.CompareAndSwap(nil, err.Error())
				case string(resp.GetPayload().GetBody()) == "green":
					g.green.Add(1)
				default:
					g.blue.Add(1)
				}
			}
		}()
	}
	t.Cleanup(g.halt)
	return g
}

func (g *grpcLoad) halt() {
	select {
	case <-g.stop:
		return
	default:
	}
	close(g.stop)
	g.wg.Wait()
	g.cancel()
	for _, cc := range g.conns {
		cc.Close()
	}
}

// A gRPC canary through the built binary, on h2c pools: one whose calls
// fail with UNAVAILABLE (HTTP status 200 each) is rolled back by the
// tripwire, and one failing a fifth of its calls, with the tripwire off,
// by the analysis; a healthy one is promoted, through the TLS listener.
func TestGRPCCanaryRollouts(t *testing.T) {
	long(t)
	for _, tc := range []struct {
		name      string
		failEvery int64 // the canary fails one call in this many; 0: none
		tripwire  string
		interval  string // between analyses: long when the tripwire alone is to act
		tls       bool
		want      rollout.Phase
		check     string // the verdict that decided
	}{
		{"tripwire", 1, "{ window: 2s, min_requests: 20 }", "1m", false, rollout.RolledBack, "tripwire"},
		{"analysis", 5, "{ disabled: true }", "1s", false, rollout.RolledBack, "error_rate"},
		{"healthy", 0, "{}", "1s", true, rollout.Promoted, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blue, green := grpctest.Start(t, "blue", nil), grpctest.Start(t, "green", nil)
			if tc.failEvery > 0 {
				green.FailEvery(14, tc.failEvery) // UNAVAILABLE
			}
			dir := t.TempDir()
			top := "server: { h2c: true }\n"
			creds := insecure.NewCredentials()
			if tc.tls {
				ca := testcerts.NewCA(t, "CA")
				cf, kf := ca.WriteLeaf(t, dir, "site", "127.0.0.1")
				top = fmt.Sprintf("tls: { cert_file: %s, key_file: %s }\n", cf, kf)
				creds = credentials.NewTLS(&tls.Config{RootCAs: ca.Pool})
			}
			cfg := writeConfig(t, fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
state_dir: %q
%sroutes:
  - name: rpc
    # Passive ejection off: five UNAVAILABLE in a row would take the
    # canary out before the rollout's own checks could judge it.
    health: { passive: { consecutive_failures: 0 } }
    pools:
      - { name: blue, weight: 100, protocol: h2c, instances: ["%s"] }
      - { name: green, weight: 0, protocol: h2c, instances: ["%s"] }
    rollout:
      stable: blue
      canary: green
      steps: [20, 50, 100]
      interval: %s
      min_requests: 60
      failure_limit: 1
      tripwire: %s
      analysis: { max_error_rate: 0.02 }
`, dir, top, blue.Addr, green.Addr, tc.interval, tc.tripwire))
			c := startCanaryd(t, cfg)
			target := strings.TrimPrefix(c.proxy, "http://")
			g := startGRPCLoad(t, target, creds, 4)
			st := c.waitPhase(t, "rpc", tc.want, 60*time.Second)
			g.halt()
			t.Logf("%s: %s after %d calls (%d to green, %d failed; first: %v): %s", tc.name, st.Phase, g.total.Load(), g.green.Load(), g.failed.Load(), g.firstFailed.Load(), st.Reason)
			if tc.check != "" {
				found := false
				for _, v := range st.LastVerdicts {
					found = found || (v.Check == tc.check && v.Result == rollout.Fail)
				}
				if !found {
					t.Errorf("rolled back, but not by a failed %s verdict: %+v", tc.check, st.LastVerdicts)
				}
			} else if g.failed.Load() != 0 {
				t.Errorf("%d calls failed during a healthy rollout", g.failed.Load())
			}
			if g.green.Load()+g.failed.Load() == 0 {
				t.Error("no call reached the canary")
			}
		})
	}
}

// Debian's curl (built with nghttp2) speaks HTTP/2 to the TLS listener by
// ALPN and h2c to a plain one with prior knowledge.
func TestCurlHTTP2(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CANARYD_REQUIRE_CURL") != "" {
			t.Fatal("curl not found, and CANARYD_REQUIRE_CURL is set")
		}
		t.Skip("curl not installed (scripts/test.sh installs it)")
	}
	blue := backendProc(t, "blue")
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "CA")
	cf, kf := ca.WriteLeaf(t, dir, "site", "site.test")
	caFile := ca.WriteCA(t, dir, "ca")
	route := fmt.Sprintf(`routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["%s"] }]
`, blue)
	secure := startCanaryd(t, writeConfig(t, fmt.Sprintf("listen: \"127.0.0.1:0\"\nadmin: { listen: \"127.0.0.1:0\" }\nstate_dir: %q\ntls: { cert_file: %s, key_file: %s }\n%s", filepath.Join(dir, "s1"), cf, kf, route)))
	plain := startCanaryd(t, writeConfig(t, fmt.Sprintf("listen: \"127.0.0.1:0\"\nadmin: { listen: \"127.0.0.1:0\" }\nstate_dir: %q\nserver: { h2c: true }\n%s", filepath.Join(dir, "s2"), route)))
	_, port, _ := strings.Cut(strings.TrimPrefix(secure.proxy, "http://"), ":")
	for _, args := range [][]string{
		{"--http2", "--cacert", caFile, "--resolve", "site.test:" + port + ":127.0.0.1", "https://site.test:" + port + "/"},
		{"--http2-prior-knowledge", plain.proxy + "/"},
	} {
		out, err := exec.Command(curl, append([]string{"-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"}, args...)...).CombinedOutput()
		if err != nil || string(out) != "2 200" {
			t.Errorf("curl %v: %q %v; want HTTP/2 and 200", args, out, err)
		}
	}
}
