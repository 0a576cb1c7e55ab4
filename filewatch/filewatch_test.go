package filewatch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every way a file changes notifies: written in place, replaced by
// rename, deleted and created again, and swapped under a symlink (the
// Kubernetes mount's ..data). A file beside it that is not watched does
// not. Watch returns once its context ends, its goroutines gone.
func TestEveryWayAFileChanges(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The watched path is a symlink to ..data/config.yaml, as a mount has it.
	if err := os.MkdirAll(filepath.Join(dir, "v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("v1/config.yaml", "a")
	if err := os.Symlink("v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/config.yaml", filepath.Join(dir, "config.yaml")); err != nil {
		t.Fatal(err)
	}
	write("cert.pem", "c")

	notes := make(chan string, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Files(ctx, []string{filepath.Join(dir, "config.yaml"), filepath.Join(dir, "cert.pem")}, 20*time.Millisecond, func(r string) { notes <- r })
	}()
	expect := func(what string) {
		t.Helper()
		select {
		case <-notes:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no notification within 5s", what)
		}
		// Drain what the same change also set off (debounced: rarely any).
		time.Sleep(60 * time.Millisecond)
		for len(notes) > 0 {
			<-notes
		}
	}
	expect("armed")
	write("cert.pem", "c2")
	expect("a write in place")
	write("cert.tmp", "c3")
	if err := os.Rename(filepath.Join(dir, "cert.tmp"), filepath.Join(dir, "cert.pem")); err != nil {
		t.Fatal(err)
	}
	expect("a replace by rename")
	if err := os.Remove(filepath.Join(dir, "cert.pem")); err != nil {
		t.Fatal(err)
	}
	expect("a delete")
	write("cert.pem", "c4")
	expect("the file created again")
	if err := os.MkdirAll(filepath.Join(dir, "v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("v2/config.yaml", "b")
	if err := os.Symlink("v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	expect("the symlink swapped")
	write("unrelated.txt", "x")
	select {
	case r := <-notes:
		t.Errorf("a file not watched notified: %s", r)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A glob watches the files it matches in its directory, new ones
// included: a file written, created, renamed into place or removed
// notifies; a file the glob does not match does not.
func TestGlobWatchesItsFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", "a")
	notes := make(chan string, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Files(ctx, []string{filepath.Join(dir, "*.yaml")}, 20*time.Millisecond, func(r string) { notes <- r })
	}()
	expect := func(what string, want bool) {
		t.Helper()
		wait := 5 * time.Second
		if !want {
			wait = 300 * time.Millisecond
		}
		select {
		case r := <-notes:
			if !want {
				t.Fatalf("%s: notified (%s), want none", what, r)
			}
		case <-time.After(wait):
			if want {
				t.Fatalf("%s: no notification within %v", what, wait)
			}
		}
		time.Sleep(60 * time.Millisecond)
		for len(notes) > 0 {
			<-notes
		}
	}
	expect("armed", true)
	write("a.yaml", "a2")
	expect("a matching file written", true)
	write("b.yaml", "b")
	expect("a new matching file", true)
	write("notes.txt", "x")
	expect("a file the glob does not match", false)
	write(".c.tmp", "c")
	if err := os.Rename(filepath.Join(dir, ".c.tmp"), filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}
	expect("a file renamed into place", true)
	if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	expect("a matching file removed", true)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
