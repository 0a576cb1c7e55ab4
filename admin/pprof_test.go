package admin

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// admin.pprof: off, the profiles are not served; on, each needs the
// token (reads too) and a Host the admin answers to, and what it serves
// is a real profile that `go tool pprof` reads, as docs/admin-api.md
// shows.
func TestPprofBehindTheToken(t *testing.T) {
	off := New(Options{Ready: func() bool { return true }, Token: "s3cret"})
	if w := serve(off, "GET", "/debug/pprof/heap", "127.0.0.1", "s3cret", ""); w.Code != http.StatusNotFound {
		t.Fatalf("pprof off: %d; want 404", w.Code)
	}
	srv := httptest.NewServer(New(Options{Ready: func() bool { return true }, Token: "s3cret", Pprof: true}))
	defer srv.Close()
	get := func(path, token, host string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=2", "/debug/pprof/profile?seconds=1", "/debug/pprof/cmdline", "/debug/pprof/trace?seconds=1"} {
		if resp, _ := get(path, "", ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without the token: %d; want 401", path, resp.StatusCode)
		}
		if resp, _ := get(path, "wrong", ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d; want 401", path, resp.StatusCode)
		}
	}
	if resp, _ := get("/debug/pprof/heap", "s3cret", "attacker.example"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a foreign Host: %d; want 403 (DNS rebinding)", resp.StatusCode)
	}
	dir := t.TempDir()
	for _, p := range []struct{ path, file string }{{"/debug/pprof/heap", "heap.pprof"}, {"/debug/pprof/profile?seconds=1", "cpu.pprof"}} {
		resp, body := get(p.path, "s3cret", "")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", p.path, resp.StatusCode, body)
		}
		if _, err := gzip.NewReader(bytes.NewReader(body)); err != nil {
			t.Fatalf("%s: not a gzipped profile: %v", p.path, err)
		}
		f := filepath.Join(dir, p.file)
		if err := os.WriteFile(f, body, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "tool", "pprof", "-top", f).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "flat") {
			t.Fatalf("go tool pprof -top %s: %v\n%s", p.file, err, out)
		}
	}
}
