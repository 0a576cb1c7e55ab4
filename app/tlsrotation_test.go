package app

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"canaryd/config"
	"canaryd/internal/testcerts"
	"canaryd/metrics"
)

// A rotation that writes the certificate, then the key a moment later (as
// certbot's deploy hooks and scripts do), logs no ERROR: the half-done
// pair is a WARN, and the finished one is served. A pair that stays
// broken past the grace is one ERROR, not one per look.
func TestCertThenKeyRotationIsNoError(t *testing.T) {
	long(t) // seconds of load: outside the fast lane
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "CA")
	certPath, keyPath := ca.WriteLeaf(t, dir, "site", "site.test")
	path := filepath.Join(dir, "config.yaml")
	text := fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: off }
reload: { debounce: 20ms }
tls: { cert_file: %s, key_file: %s }
routes:
  - name: web
    pools: [{ name: blue, weight: 100, instances: ["127.0.0.1:1"] }]
`, certPath, keyPath)
	writeFile(t, path, text)
	cfg, err := config.Parse(path, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	srv, err := New(cfg, Options{ConfigPath: path, ConfigData: []byte(text), Logger: zap.New(core), Registry: metrics.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	serveFor(t, srv)
	errorLines := func() int {
		return logs.FilterMessage("TLS file reload failed; the previous certificates keep serving until the files are fixed").Len()
	}
	waitFor(t, 5*time.Second, func() bool { return len(srv.tlsFiles()) == 2 })

	// The certificate first; the key 300ms later (past the debounce: the
	// half-done pair is read).
	cert2, key2 := ca.Leaf(t, "site.test")
	testcerts.Write(t, certPath, cert2)
	waitFor(t, 5*time.Second, func() bool { return logs.FilterLevelExact(zapcore.WarnLevel).Len() > 0 })
	time.Sleep(300 * time.Millisecond)
	testcerts.Write(t, keyPath, key2)
	waitFor(t, 5*time.Second, func() bool { return logs.FilterMessage("listener certificates reloaded").Len() > 0 })
	time.Sleep(tlsGrace + 500*time.Millisecond) // past any recheck
	if n := errorLines(); n != 0 {
		t.Fatalf("an expected cert-then-key rotation logged %d ERROR lines", n)
	}

	// A pair that stays broken: one ERROR after the grace, however many
	// looks follow.
	cert3, _ := ca.Leaf(t, "site.test")
	testcerts.Write(t, certPath, cert3)
	waitFor(t, 5*time.Second, func() bool { return errorLines() == 1 })
	srv.Reload(t.Context(), "test")
	srv.Reload(t.Context(), "test")
	if n := errorLines(); n != 1 {
		t.Fatalf("a broken pair logged %d ERROR lines, want 1", n)
	}
}
