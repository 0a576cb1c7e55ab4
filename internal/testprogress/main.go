// Command testprogress reads `go test -json` on stdin and prints one line
// per package as each finishes (go test's own output keeps package order,
// so a slow package early in the list hides the others for minutes), with
// the whole output of every package that failed. While nothing finishes it
// says what is still running at least every 20 s, so a long run is never
// silent; it ends with one summary line, "N passed, N failed, N skipped"
// (tests, subtests apart). It exits 1 when a package or a build failed.
// scripts/test.sh pipes the full run through it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// heartbeat is the longest silence: past it, what still runs is said.
const heartbeat = 20 * time.Second

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
	ok, err := run(os.Stdin, os.Stdout, heartbeat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testprogress:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// progress is what the run has seen so far.
type progress struct {
	w   io.Writer
	out map[string]*strings.Builder // output by package (or build)
	// running packages, and in each the top-level tests running, with
	// when each began.
	running                 map[string]map[string]time.Time
	began                   time.Time
	passed, failed, skipped int
	broken                  bool // a package or a build failed
	lastSaid                time.Time
}

// run reports the events read from r on w, and what still runs after
// every silence of `every`; ok is false when a package or a build failed.
func run(r io.Reader, w io.Writer, every time.Duration) (ok bool, err error) {
	p := &progress{w: w, out: map[string]*strings.Builder{}, running: map[string]map[string]time.Time{}, began: time.Now(), lastSaid: time.Now()}
	lines := make(chan []byte)
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			lines <- append([]byte(nil), sc.Bytes()...)
		}
		done <- sc.Err()
	}()
	tick := time.NewTicker(every / 4)
	defer tick.Stop()
	for {
		select {
		case line := <-lines:
			p.line(line)
		case now := <-tick.C:
			if now.Sub(p.lastSaid) >= every {
				p.say("still running after %s: %s\n", now.Sub(p.began).Round(time.Second), p.stillRunning(now))
			}
		case err := <-done:
			p.say("%d passed, %d failed, %d skipped\n", p.passed, p.failed, p.skipped)
			return !p.broken, err
		}
	}
}

func (p *progress) say(format string, args ...any) {
	fmt.Fprintf(p.w, format, args...)
	p.lastSaid = time.Now()
}

func (p *progress) line(line []byte) {
	var e event
	if json.Unmarshal(line, &e) != nil || e.Action == "" {
		p.say("%s\n", line) // not an event: go's own complaint
		return
	}
	key := e.Package
	if e.ImportPath != "" {
		key = e.ImportPath
	}
	topLevel := e.Test != "" && !strings.Contains(e.Test, "/")
	switch e.Action {
	case "start":
		p.running[e.Package] = map[string]time.Time{}
	case "run":
		if topLevel && p.running[e.Package] != nil {
			p.running[e.Package][e.Test] = time.Now()
		}
	case "output", "build-output":
		b := p.out[key]
		if b == nil {
			b = &strings.Builder{}
			p.out[key] = b
		}
		b.WriteString(e.Output)
	case "build-fail":
		p.broken = true
		p.say("BUILD FAIL %s\n%s", key, text(p.out[key]))
	case "pass", "fail", "skip":
		if e.Test != "" {
			if topLevel {
				p.count(e.Action)
				delete(p.running[e.Package], e.Test)
			}
			return
		}
		delete(p.running, e.Package)
		switch {
		case e.Action == "fail":
			p.broken = true
			p.say("%sFAIL %s %.1fs\n", text(p.out[key]), e.Package, e.Elapsed)
		case e.Action == "skip" || strings.Contains(text(p.out[key]), "[no test files]"):
			p.say("--   %s (no tests)\n", e.Package)
		default:
			p.say("ok   %s %.1fs\n", e.Package, e.Elapsed)
		}
		delete(p.out, key)
	}
}

func (p *progress) count(action string) {
	switch action {
	case "pass":
		p.passed++
	case "fail":
		p.failed++
	default:
		p.skipped++
	}
}

// stillRunning names the packages running, each with its longest-running
// test: "canaryd/app (TestX 41s), canaryd/proxy".
func (p *progress) stillRunning(now time.Time) string {
	pkgs := make([]string, 0, len(p.running))
	for pkg := range p.running {
		pkgs = append(pkgs, pkg)
	}
	slices.Sort(pkgs)
	parts := make([]string, 0, len(pkgs))
	for _, pkg := range pkgs {
		oldest, since := "", now
		for test, at := range p.running[pkg] {
			if at.Before(since) || (at.Equal(since) && test < oldest) {
				oldest, since = test, at
			}
		}
		if oldest != "" {
			parts = append(parts, fmt.Sprintf("%s (%s %s)", pkg, oldest, now.Sub(since).Round(time.Second)))
		} else {
			parts = append(parts, pkg)
		}
	}
	if len(parts) == 0 {
		return "building"
	}
	return strings.Join(parts, ", ")
}

func text(b *strings.Builder) string {
	if b == nil {
		return ""
	}
	return b.String()
}
