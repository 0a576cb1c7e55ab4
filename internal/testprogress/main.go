// Command testprogress reads `go test -json` on stdin and prints one line
// per package as each finishes (go test's own output keeps package order,
// so a slow package early in the list hides the others for minutes), with
// the whole output of every package that failed. It exits 1 when a package
// or a build failed. scripts/test.sh pipes the full run through it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

type event struct {
	Action      string
	Package     string
	Test        string
	Elapsed     float64
	Output      string
	ImportPath  string
	FailedBuild string
}

func main() {
	ok, err := run(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testprogress:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// run reports the events read from r on w; ok is false when a package or
// a build failed.
func run(r io.Reader, w io.Writer) (ok bool, err error) {
	out := map[string]*strings.Builder{} // output by package (or build)
	failed := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if json.Unmarshal(line, &e) != nil || e.Action == "" {
			fmt.Fprintln(w, string(line)) // not an event: go's own complaint
			continue
		}
		key := e.Package
		if e.ImportPath != "" {
			key = e.ImportPath
		}
		switch e.Action {
		case "output", "build-output":
			b := out[key]
			if b == nil {
				b = &strings.Builder{}
				out[key] = b
			}
			b.WriteString(e.Output)
		case "build-fail":
			failed = true
			fmt.Fprintf(w, "BUILD FAIL %s\n%s", key, text(out[key]))
		case "pass", "fail", "skip":
			if e.Test != "" {
				continue
			}
			switch {
			case e.Action == "fail":
				failed = true
				fmt.Fprintf(w, "%sFAIL %s %.1fs\n", text(out[key]), e.Package, e.Elapsed)
			case e.Action == "skip" || strings.Contains(text(out[key]), "[no test files]"):
				fmt.Fprintf(w, "--   %s (no tests)\n", e.Package)
			default:
				fmt.Fprintf(w, "ok   %s %.1fs\n", e.Package, e.Elapsed)
			}
			delete(out, key)
		}
	}
	return !failed, sc.Err()
}

func text(b *strings.Builder) string {
	if b == nil {
		return ""
	}
	return b.String()
}
