package config

import (
	"bytes"
	"errors"
	"slices"
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
