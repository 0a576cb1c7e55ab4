package main

import (
	"strings"
	"testing"
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
	ok, err := run(strings.NewReader(in), &out)
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
	if ok, _ := run(strings.NewReader(`{"Action":"pass","Package":"b","Elapsed":1}`), &out); !ok {
		t.Error("a passing run reported a failure")
	}
}
