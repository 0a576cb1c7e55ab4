package canaryd_test

import (
	"bufio"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// thirdParty maps the short names docs/architecture.md uses for modules
// to their import path prefixes.
var thirdParty = map[string]string{
	"fsnotify":          "github.com/fsnotify/fsnotify",
	"yaml":              "go.yaml.in/yaml/v3",
	"client_golang":     "github.com/prometheus/client_golang",
	"prometheus/common": "github.com/prometheus/common",
	"etcd":              "go.etcd.io/etcd",
	"miekg/dns":         "github.com/miekg/dns",
	"zap":               "go.uber.org/zap",
	"cobra":             "github.com/spf13/cobra",
	"x/crypto/ocsp":     "golang.org/x/crypto/ocsp",
}

// Every package of the product imports only what its row of the package
// map in docs/architecture.md allows: the map is the rule, read from the
// doc, so the two cannot drift apart. A package without a row fails too.
func TestImportsFollowTheArchitecture(t *testing.T) {
	rows := architectureRows(t)
	fset := token.NewFileSet()
	seen := map[string]bool{}
	filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if d.IsDir() {
			switch path {
			case "bench", "internal", ".git", "artifacts":
				return filepath.SkipDir // tools and test helpers
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		pkg := filepath.ToSlash(filepath.Dir(path))
		if pkg == "." {
			pkg = "canaryd"
		}
		seen[pkg] = true
		allowed, ok := rows[pkg]
		if !ok {
			t.Errorf("package %s has no row in docs/architecture.md's package map; add one (its job and what it may import)", pkg)
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			if !importAllowed(p, allowed) {
				t.Errorf("%s imports %s, outside its row of docs/architecture.md (%s)", path, p, strings.Join(allowed, ", "))
			}
		}
		return nil
	})
	for pkg := range rows {
		if !seen[pkg] {
			t.Errorf("docs/architecture.md has a row for %s, which has no product files", pkg)
		}
	}
}

func importAllowed(p string, allowed []string) bool {
	first, _, _ := strings.Cut(p, "/")
	if !strings.Contains(first, ".") && first != "canaryd" {
		return true // the standard library
	}
	for _, a := range allowed {
		if mod, ok := thirdParty[a]; ok && (p == mod || strings.HasPrefix(p, mod+"/")) {
			return true
		}
		if p == "canaryd/"+a || (a == "canaryd" && p == "canaryd") {
			return true
		}
	}
	return false
}

// architectureRows reads the package map: package → what it may import.
func architectureRows(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	code := regexp.MustCompile("`([^`]+)`")
	rows := map[string][]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "| package | one job | may import |"):
			in = true
			continue
		case !in:
			continue
		case !strings.HasPrefix(line, "|"):
			in = false
			continue
		case strings.HasPrefix(line, "| ---"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 3 {
			t.Fatalf("docs/architecture.md: a row of the package map without 3 cells: %s", line)
		}
		name := code.FindStringSubmatch(cells[0])
		if name == nil {
			t.Fatalf("docs/architecture.md: a row without a `package`: %s", line)
		}
		var may []string
		for _, m := range code.FindAllStringSubmatch(cells[2], -1) {
			may = append(may, m[1])
		}
		rows[name[1]] = may
	}
	if len(rows) == 0 {
		t.Fatal("docs/architecture.md has no package map (a table headed | package | one job | may import |)")
	}
	return rows
}
