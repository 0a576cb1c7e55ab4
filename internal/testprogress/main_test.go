package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"start","Package":"a"}`,
		`{"Action":"output","Package":"a","Test":"TestX","Output":"=== RUN TestX\n"}`,
		`{"Action":"output","Package":"b","Output":"ok  \tb\t0.1s\n"}`,
		`{"Action":"pass","Package":"b","Elapsed":0.1}`,
		`{"Action":"output","Package":"a","Test":"TestX","Output":"    x_test.go:3: boom\n"}`,
		`{"Action":"fail","Package":"a","Test":"TestX","Elapsed":0.2}`,
		`{"Action":"fail","Package":"a","Elapsed":0.3}`,
		`{"Action":"output","Package":"c","Output":"?   \tc\t[no test files]\n"}`,
		`{"Action":"skip","Package":"c","Elapsed":0}`,
		`go: downloading something`,
	}, "\n")
	var out strings.Builder
	ok, err := run(strings.NewReader(in), &out, time.Hour)
	if err != nil || ok {
		t.Fatalf("run = %v, %v; want a failure reported", ok, err)
	}
	got := out.String()
	for _, want := range []string{"ok   b 0.1s\n", "=== RUN TestX\n    x_test.go:3: boom\nFAIL a 0.3s\n", "--   c (no tests)\n", "go: downloading something\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	// "ok b" comes before a's failure: each package when it finishes.
	if strings.Index(got, "ok   b") > strings.Index(got, "FAIL a") {
		t.Errorf("not in finishing order:\n%s", got)
	}
	if ok, _ := run(strings.NewReader(`{"Action":"pass","Package":"b","Elapsed":1}`), &out, time.Hour); !ok {
		t.Error("a passing run reported a failure")
	}
}

// A silent stretch says what still runs; the run ends with one summary
// line, top-level tests counted (a subtest is not one more test).
func TestHeartbeatAndSummary(t *testing.T) {
	r, w := io.Pipe()
	var out syncBuffer
	result := make(chan bool, 1)
	go func() {
		ok, _ := run(r, &out, 100*time.Millisecond)
		result <- ok
	}()
	fmt.Fprintln(w, `{"Action":"start","Package":"p"}`)
	fmt.Fprintln(w, `{"Action":"run","Package":"p","Test":"TestSlow"}`)
	fmt.Fprintln(w, `{"Action":"run","Package":"p","Test":"TestSlow/sub"}`)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "still running after") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "p (TestSlow ") {
		t.Fatalf("no heartbeat naming the test running:\n%s", out.String())
	}
	for _, l := range []string{
		`{"Action":"pass","Package":"p","Test":"TestSlow/sub"}`,
		`{"Action":"pass","Package":"p","Test":"TestSlow"}`,
		`{"Action":"run","Package":"p","Test":"TestBad"}`,
		`{"Action":"fail","Package":"p","Test":"TestBad"}`,
		`{"Action":"skip","Package":"p","Test":"TestSkip"}`,
		`{"Action":"fail","Package":"p","Elapsed":1}`,
	} {
		fmt.Fprintln(w, l)
	}
	w.Close()
	if ok := <-result; ok {
		t.Error("a failed package reported as a success")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; last != "1 passed, 1 failed, 1 skipped" {
		t.Errorf("summary %q, want \"1 passed, 1 failed, 1 skipped\"", last)
	}
}

// syncBuffer is a strings.Builder safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
