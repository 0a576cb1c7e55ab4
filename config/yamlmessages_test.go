package config

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Parse rewrites the YAML library's messages with regular expressions
// (lineRe, notFoundRe, unmarshRe) into ones about the file. The library's
// wording is not an API: this test pins the exact messages it gives for
// each shape rewritten, so that an upgrade that changes them fails here,
// loudly, instead of letting raw Go type names through to users.
func TestYAMLLibraryMessagesAreTheOnesRewritten(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		raw       string // the library's message (one line of a TypeError, or a syntax error)
		rewritten string // Parse's problem
	}{
		{"unknown key", "listen: \":8080\"\nbogus: 1\n",
			"line 2: field bogus not found in type config.Config",
			`line 2: unknown key "bogus" in the top level; check the spelling against docs/config.md`},
		{"unknown key in a block", "server: { bogus: 1 }\n",
			"line 1: field bogus not found in type config.Server",
			`line 1: unknown key "bogus" in server; check the spelling against docs/config.md`},
		{"a string for a number", "server: { max_header_bytes: abc }\n",
			"line 1: cannot unmarshal !!str `abc` into int",
			`line 1: "abc" is a string where a whole number is expected`},
		{"a string for a bool", "access_log: { enabled: maybe }\n",
			"line 1: cannot unmarshal !!str `maybe` into bool",
			`line 1: "maybe" is a string where true or false is expected`},
		{"a tab", "a: b\n\tc: d\n",
			"yaml: line 2: found a tab character that violates indentation",
			"line 2: YAML syntax: found a tab character that violates indentation"},
		{"an unclosed list", "routes: [\n",
			"yaml: line 1: did not find expected node content",
			"line 1: YAML syntax: did not find expected node content"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rawYAMLMessage(tc.doc); got != tc.raw {
				t.Errorf("the YAML library now says\n  %q\nwhere it said\n  %q\nupdate the regular expressions in load.go (and this test) to the new wording", got, tc.raw)
			}
			_, err := Parse("t.yaml", []byte(tc.doc))
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("Parse: %v", err)
			}
			var said []string
			for _, p := range ce.Problems {
				said = append(said, p.String())
			}
			if !slices.Contains(said, tc.rewritten) {
				t.Errorf("Parse says %q, want among them %q", said, tc.rewritten)
			}
		})
	}
}

// rawYAMLMessage is what the library says of doc, as Parse asks it: a
// syntax error whole, or the first line of a TypeError.
func rawYAMLMessage(doc string) string {
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &root); err != nil {
		return err.Error()
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.KnownFields(true)
	err := dec.Decode(&cfg)
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return te.Errors[0]
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

// A syntax error names the line at fault, not the line where the YAML
// library's construct began (it said line 7 for a missing comma on line 8,
// and line 5 for a tab on line 6).
func TestSyntaxErrorsNameTheirLine(t *testing.T) {
	head := "listen: \":8080\"\nadmin: { listen: \"127.0.0.1:9901\" }\nroutes:\n  - name: web\n    pools:\n"
	for _, tc := range []struct {
		name, doc string
		line      int
	}{
		{"a missing comma (line 8)", head +
			"      - { name: blue, weight: 90, instances: [\"127.0.0.1:9001\"] }\n" +
			"      - { name: green, weight: 10, instances: [\"127.0.0.1:9011\"] }\n" +
			"      - { name: teal weight: 0, instances: [\"127.0.0.1:9012\"] }\n", 8},
		{"a tab in the indentation (line 6)", "listen: \":8080\"\nroutes:\n  - name: web\n    pools:\n      - name: blue\n\tweight: 100\n", 6},
		{"a tab after the indentation (line 7)", "listen: \":8080\"\nroutes:\n  - name: web\n    pools:\n      - name: blue\n        weight: 100\n\t        instances: [a]\n", 7},
		{"a tab in a block (line 4)", "listen: \":8080\"\nadmin:\n  listen: x\n\ttoken_file: y\n", 4},
		{"a missing comma in a flow list (line 6)", "listen: \":8080\"\nroutes:\n  - name: web\n    pools: [\n      { name: blue, weight: 100 },\n      { name: green weight: 0 }\n    ]\n", 6},
		{"a key out of its block (line 7)", "listen: \":8080\"\nroutes:\n  - name: web\n    pools:\n      - name: blue\n        weight: 100\n      name: x\n", 7},
		{"a quote never closed (line 1)", "listen: ':8080\nroutes: []\n", 1},
		{"an unclosed list (line 2)", "listen: \":8080\"\ntrusted_proxies: [10.0.0.1\nroutes: []\n", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.doc))
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) != 1 {
				t.Fatalf("Parse: %v", err)
			}
			if p := ce.Problems[0]; p.Line != tc.line || !strings.HasPrefix(p.Msg, "YAML syntax: ") {
				t.Errorf("%s, want line %d", p, tc.line)
			}
		})
	}
}
