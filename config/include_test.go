package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// includeTree writes a main file that includes routes.d/*.yaml, and the
// files given (name → content) in routes.d; it returns the main path.
func includeTree(t *testing.T, main string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "routes.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		writeTestFile(t, filepath.Join(dir, "routes.d", name), body)
	}
	p := filepath.Join(dir, "config.yaml")
	writeTestFile(t, p, main)
	return p
}

func writeTestFile(t *testing.T, p, body string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func routeYAML(name, prefix string, green int) string {
	return "  - name: " + name + "\n    match: { path_prefix: " + prefix + " }\n    pools:\n" +
		"      - { name: blue, weight: " + strconv.Itoa(100-green) + ", instances: [\"127.0.0.1:9001\"] }\n" +
		"      - { name: green, weight: " + strconv.Itoa(green) + ", instances: [\"127.0.0.1:9002\"] }\n"
}

const includeMain = "listen: \"127.0.0.1:0\"\ninclude: [\"routes.d/*.yaml\"]\nroutes:\n" + "  - name: main\n    match: { path_prefix: /main }\n    pools: [{ name: blue, weight: 100, instances: [\"127.0.0.1:9001\"] }]\n"

func TestIncludedFilesAreAssembledInOrder(t *testing.T) {
	p := includeTree(t, includeMain, map[string]string{
		"b.yaml": "routes:\n" + routeYAML("b", "/b", 10),
		"a.yaml": "routes:\n" + routeYAML("a1", "/a1", 10) + routeYAML("a2", "/a2", 20),
		"x.txt":  "not yaml: [",
	})
	set, u, err := LoadSet(p)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range u.Config.Routes {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, " "); got != "main a1 a2 b" {
		t.Fatalf("routes %q; want the main file's, then a.yaml's, then b.yaml's", got)
	}
	if u.Hash != set.Hash() || u.Hash == hashOf(u.MainData) {
		t.Errorf("the set's hash %s should cover the included files (main alone: %s)", u.Hash, hashOf(u.MainData))
	}
	// Unchanged files: nothing to apply.
	u2, err := set.Reload(false)
	if err != nil || u2.Full || len(u2.Changed) != 0 || u2.Hash != u.Hash || u2.Err != nil {
		t.Fatalf("a reload of unchanged files: full %v changed %v hash %s err %v", u2.Full, u2.Changed, u2.Hash, u2.Err)
	}
}

// twoFiles loads the main file with routes.d/a.yaml and b.yaml, one
// route each; it returns the set and routes.d.
func twoFiles(t *testing.T) (*Set, string) {
	t.Helper()
	p := includeTree(t, includeMain, map[string]string{
		"a.yaml": "routes:\n" + routeYAML("a", "/a", 10),
		"b.yaml": "routes:\n" + routeYAML("b", "/b", 10),
	})
	set, _, err := LoadSet(p)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(filepath.Dir(p), "routes.d")
	return set, dir
}

// The unit of all-or-nothing is the file: a bad included file keeps its
// last good version while the others apply; the update names it, with
// its line.
func TestABadIncludedFileKeepsItsLastGoodVersion(t *testing.T) {
	set, dir := twoFiles(t)
	writeTestFile(t, filepath.Join(dir, "a.yaml"), "routes:\n"+routeYAML("a", "/a", 50))
	writeTestFile(t, filepath.Join(dir, "b.yaml"), "routes:\n"+strings.Replace(routeYAML("b", "/b", 30), "weight: 70", "weight: 60", 1))
	u, err := set.Reload(false)
	if err != nil {
		t.Fatal(err)
	}
	if u.Full || strings.Join(u.Changed, " ") != "a" {
		t.Errorf("full %v, changed %v; want a's route only, in place", u.Full, u.Changed)
	}
	var ce *Error
	if !errors.As(u.Err, &ce) || ce.File != filepath.Join(dir, "b.yaml") || !strings.Contains(u.Err.Error(), "line 4") || !strings.Contains(u.Err.Error(), "sum") {
		t.Fatalf("error %v; want b.yaml's weights, with its line", u.Err)
	}
	weights := map[string]Percent{}
	for _, r := range u.Config.Routes {
		weights[r.Name] = r.Pools[len(r.Pools)-1].Weight
	}
	if weights["a"] != 5000 || weights["b"] != 1000 {
		t.Fatalf("green weights %v; want a's edit applied (50) and b's last good version (10)", weights)
	}
	for _, f := range u.Files {
		if (f.Err != nil) != strings.HasSuffix(f.Path, "b.yaml") {
			t.Errorf("file %s: %v", f.Path, f.Err)
		}
	}
	set.Commit(u)
	// Fixed: it applies, and only its route changed.
	writeTestFile(t, filepath.Join(dir, "b.yaml"), "routes:\n"+routeYAML("b", "/b", 30))
	u, err = set.Reload(false)
	if err != nil || u.Err != nil || u.Full || strings.Join(u.Changed, " ") != "b" {
		t.Fatalf("b fixed: err %v/%v full %v changed %v", err, u.Err, u.Full, u.Changed)
	}
}

// Route names and matches are unique across files: a clash names both
// places, and the file that brought it keeps its last good version (a new
// file is left out).
func TestRoutesClashAcrossFiles(t *testing.T) {
	p := includeTree(t, includeMain, map[string]string{"a.yaml": "routes:\n" + routeYAML("a", "/a", 10)})
	set, _, err := LoadSet(p)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(filepath.Dir(p), "routes.d")
	writeTestFile(t, filepath.Join(dir, "b.yaml"), "routes:\n"+routeYAML("c", "/c", 10)+routeYAML("a", "/other", 10))
	u, err := set.Reload(false)
	if err != nil {
		t.Fatal(err)
	}
	if u.Err == nil || !strings.Contains(u.Err.Error(), `route "a" is already defined in `+filepath.Join(dir, "a.yaml")+":2") || !strings.Contains(u.Err.Error(), "b.yaml") || !strings.Contains(u.Err.Error(), "line 7") {
		t.Fatalf("clash error: %v", u.Err)
	}
	for _, r := range u.Config.Routes {
		if r.Name == "c" {
			t.Fatal("the clashing new file's routes were applied")
		}
	}
	// The same match under another name.
	writeTestFile(t, filepath.Join(dir, "b.yaml"), "routes:\n"+routeYAML("d", "/a", 10))
	if u, _ = set.Reload(false); u.Err == nil || !strings.Contains(u.Err.Error(), "same host") {
		t.Fatalf("match clash: %v", u.Err)
	}
	// And validate (LoadSet) refuses the whole set.
	if _, _, err := LoadSet(p); err == nil || !strings.Contains(err.Error(), "b.yaml") {
		t.Fatalf("LoadSet: %v", err)
	}
}

func TestIncludeProblems(t *testing.T) {
	for _, tc := range []struct {
		name, main string
		files      map[string]string
		want       []string
	}{
		{"wildcard in the directory", "include: [\"*/r.yaml\"]\n", nil, []string{"include[0]", "only the file name"}},
		{"bad pattern", "include: [\"routes.d/[.yaml\"]\n", nil, []string{"include[0]", "not a valid glob"}},
		{"missing directory", "include: [\"nowhere/*.yaml\"]\n", nil, []string{"nowhere does not exist", "create it"}},
		{"no routes anywhere", "include: [\"routes.d/*.yaml\"]\n", nil, []string{"no routes in this file or the files it includes"}},
		{"a top-level key in an included file", "include: [\"routes.d/*.yaml\"]\n", map[string]string{"a.yaml": "listen: \":1\"\nroutes:\n" + routeYAML("a", "/a", 0)},
			[]string{"a.yaml", "line 1", `unknown key "listen" in an included file (it holds routes: only)`}},
		{"a bad route names its file and line", "include: [\"routes.d/*.yaml\"]\n", map[string]string{"a.yaml": "routes:\n" + routeYAML("a", "/a", 0) + "  - name: b\n    pools: [{ name: x, weight: 100, instances: [\"nohost\"] }]\n"},
			[]string{"a.yaml", "line 8", "routes[1](b).pools[0](x).instances[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := includeTree(t, "listen: \"127.0.0.1:0\"\n"+tc.main, tc.files)
			_, _, err := LoadSet(p)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("error %v lacks %q", err, w)
				}
			}
		})
	}
}

// A main file without include hashes as before: its own hash.
func TestSetHashWithoutIncludes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	writeTestFile(t, p, validYAML)
	_, u, err := LoadSet(p)
	if err != nil || u.Hash != hashOf([]byte(validYAML)) {
		t.Fatalf("hash %s, want %s (%v)", u.Hash, hashOf([]byte(validYAML)), err)
	}
}

func FuzzParseRoutes(f *testing.F) {
	f.Add([]byte("routes:\n" + routeYAML("a", "/a", 10)))
	f.Add([]byte(""))
	f.Add([]byte("routes: []\n"))
	f.Add([]byte("listen: x\n"))
	f.Add([]byte("routes:\n  - name: a\n    rules: [{ name: r, match: { header: { X: { regex: \"(\" } } }, pool: blue }]\n"))
	top, err := Parse("t.yaml", []byte(validYAML))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		inc, err := ParseRoutes("fuzz.yaml", data, top)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 || ce.File != "fuzz.yaml" {
				t.Fatalf("error is not a problem list naming the file: %v", err)
			}
			return
		}
		if len(inc.lines) != len(inc.Routes) {
			t.Fatalf("%d routes, %d lines", len(inc.Routes), len(inc.lines))
		}
	})
}

// An included file that had routes and reads empty (caught between an
// editor's truncation and its write) is refused and its routes stay; an
// explicit `routes: []` removes them. A new empty file has no routes yet.
func TestAnEmptiedIncludedFileKeepsItsRoutes(t *testing.T) {
	set, dir := twoFiles(t)
	names := func(u *Update) string {
		var n []string
		for _, r := range u.Config.Routes {
			n = append(n, r.Name)
		}
		return strings.Join(n, " ")
	}
	for _, all := range []bool{false, true} {
		writeTestFile(t, filepath.Join(dir, "a.yaml"), "")
		writeTestFile(t, filepath.Join(dir, "new.yaml"), "\n")
		u, err := set.Reload(all)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(u); got != "main a b" || u.Err == nil || !strings.Contains(u.Err.Error(), "a.yaml") || !strings.Contains(u.Err.Error(), "is empty and held 1 routes") {
			t.Fatalf("reload (all %v) of an emptied a.yaml: routes %q, error %v; want a kept and the file named", all, got, u.Err)
		}
		set.Commit(u)
		writeTestFile(t, filepath.Join(dir, "a.yaml"), "routes:\n"+routeYAML("a", "/a", 10))
	}
	writeTestFile(t, filepath.Join(dir, "a.yaml"), "routes: []\n")
	u, err := set.Reload(false)
	if err != nil || u.Err != nil || names(u) != "main b" {
		t.Fatalf("routes: [] in a.yaml: %v/%v, routes %q; want a removed", err, u.Err, names(u))
	}
}

// The race itself: a file rewritten in place (truncate, then write) while
// reloads read it. No reload may lose its route.
func TestRewrittenIncludedFileNeverLosesItsRoutes(t *testing.T) {
	p := includeTree(t, includeMain, map[string]string{"a.yaml": "routes:\n" + routeYAML("a", "/a", 10)})
	set, _, err := LoadSet(p)
	if err != nil {
		t.Fatal(err)
	}
	a := filepath.Join(filepath.Dir(p), "routes.d", "a.yaml")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			os.WriteFile(a, []byte("routes:\n"+routeYAML("a", "/a", 10+i%2)), 0o644)
		}
	}()
	empty := 0
	for i := 0; ; i++ {
		select {
		case <-done:
			t.Logf("%d reloads, %d read the file empty", i, empty)
			return
		default:
		}
		u, err := set.Reload(false)
		if err != nil {
			t.Fatal(err)
		}
		if u.Err != nil {
			empty++
		}
		if len(u.Config.Routes) != 2 {
			t.Fatalf("reload %d: %d routes (%v); route a was lost while its file was rewritten", i, len(u.Config.Routes), u.Err)
		}
		set.Commit(u)
	}
}
