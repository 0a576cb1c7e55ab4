package canaryd_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every goroutine the product starts is under the panic policy (package
// panics): its function defers panics.Recover or runs in panics.Guard.
// The exceptions run only net/http's own code, which recovers what it
// must (a handler's panic is the connection's).
func TestEveryGoroutineIsUnderThePanicPolicy(t *testing.T) {
	allowed := map[string]bool{
		"app/app.go: go serveOn(":            true, // http.Server.Serve
		"app/app.go: s.proxy.Shutdown(dctx)": true,
	}
	fset := token.NewFileSet()
	funcs := map[string]*ast.FuncDecl{} // by name, for `go c.loop()` forms
	var files []*ast.File
	var names []string
	var sources [][]byte
	filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if d.IsDir() {
			switch path {
			case "bench", "internal", "cmd", "demo", "panics", ".git":
				return filepath.SkipDir // tools, test helpers, the CLI's process
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		files, names, sources = append(files, f), append(names, path), append(sources, src)
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
				funcs[filepath.Dir(path)+"."+fd.Name.Name] = fd
			}
		}
		return nil
	})
	guarded := func(body *ast.BlockStmt) bool {
		found := false
		ast.Inspect(body, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok {
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
					if id, ok := sel.X.(*ast.Ident); ok && id.Name == "panics" && (sel.Sel.Name == "Recover" || sel.Sel.Name == "Guard") {
						found = true
					}
				}
			}
			return !found
		})
		return found
	}
	checked := 0
	for i, f := range files {
		dir := filepath.Dir(names[i])
		ast.Inspect(f, func(n ast.Node) bool {
			g, ok := n.(*ast.GoStmt)
			if !ok {
				return true
			}
			checked++
			var ok2 bool
			src := string(sources[i][fset.Position(g.Pos()).Offset:fset.Position(g.End()).Offset])
			switch fn := g.Call.Fun.(type) {
			case *ast.FuncLit:
				ok2 = guarded(fn.Body)
			case *ast.SelectorExpr:
				if fd := funcs[dir+"."+fn.Sel.Name]; fd != nil {
					ok2 = guarded(fd.Body)
				}
			}
			what := ""
			for k := range allowed {
				if _, frag, _ := strings.Cut(k, ": "); strings.HasPrefix(k, names[i]+": ") && strings.Contains(src, frag) {
					what = frag
				}
			}
			if !ok2 && what == "" {
				t.Errorf("%s: a goroutine outside the panic policy (%s): defer panics.Recover in it, or run it in panics.Guard", fset.Position(g.Pos()), src)
			}
			return true
		})
	}
	if checked < 10 {
		t.Fatalf("only %d go statements found; is the walk right?", checked)
	}
}
