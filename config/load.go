package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a config file.
type Problem struct {
	Line int    // 1-based; 0 when unknown
	Path string // e.g. routes[0].pools[1].weight; may name route and pool
	Msg  string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error lists every problem found in a config file, in line order.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config %s is invalid (%d problem", e.File, len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString("); fix and save again:")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// maxFileSize bounds what Load reads: a config is kilobytes; anything near
// this is a wrong path (a log, a binary) and should fail fast.
const maxFileSize = 4 << 20

// Parse decodes data strictly (unknown keys are errors), fills defaults and
// validates. name is used in messages only. The error, if any, is an *Error
// listing every problem found.
func Parse(name string, data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &Error{File: name, Problems: []Problem{syntaxProblem(err, data)}}
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, &Error{File: name, Problems: []Problem{{Msg: "file is empty; it needs at least one route"}}}
	}

	var cfg Config
	typeProblems, err := decodeStrict(name, data, &cfg)
	if err != nil {
		return nil, err
	}

	cfg.applyDefaults()
	v := validator{root: root.Content[0]}
	v.config(&cfg)
	ps := append(typeProblems, v.problems...)
	if len(ps) > 0 {
		sortProblems(ps)
		return nil, &Error{File: name, Problems: ps}
	}
	return &cfg, nil
}

// decodeStrict decodes one YAML document into v, unknown keys refused.
// A TypeError leaves the rest of the document decoded: its problems are
// returned, so that validation can add its own and one run shows every
// problem. A syntax error, or a second document, is the error.
func decodeStrict(name string, data []byte, v any) ([]Problem, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(v)
	var te *yaml.TypeError
	switch {
	case errors.As(err, &te):
		var ps []Problem
		for _, m := range te.Errors {
			ps = append(ps, typeProblem(m))
		}
		return ps, nil
	case err != nil:
		return nil, &Error{File: name, Problems: []Problem{syntaxProblem(err, data)}}
	}
	var extra yaml.Node
	if dec.Decode(&extra) != io.EOF {
		return nil, &Error{File: name, Problems: []Problem{{Line: extra.Line, Msg: "more than one YAML document; keep one document per file"}}}
	}
	return nil, nil
}

func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
}

var (
	lineRe     = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	notFoundRe = regexp.MustCompile(`^field (\S+) not found in type config\.(\w+)$`)
	unmarshRe  = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (.*)$")
)

// typeProblem turns the decoder's Go-flavoured messages into ones about the
// file: "field foo not found in type config.Route" → unknown key "foo".
func typeProblem(m string) Problem {
	p := Problem{Msg: m}
	if g := lineRe.FindStringSubmatch(m); g != nil {
		p.Line, _ = strconv.Atoi(g[1])
		p.Msg = g[2]
	}
	if g := notFoundRe.FindStringSubmatch(p.Msg); g != nil {
		p.Msg = fmt.Sprintf("unknown key %q in %s; check the spelling against docs/config.md", g[1], sectionName(g[2]))
	} else if g := unmarshRe.FindStringSubmatch(p.Msg); g != nil {
		p.Msg = fmt.Sprintf("%q is a %s where %s is expected", g[2], yamlKind(g[1]), goKind(g[3]))
	}
	return p
}

// syntaxProblem turns a YAML syntax error into a problem on the line at
// fault. The library names the line where the construct around the problem
// began, and counts it from 0 for some errors and from 1 for others: a
// missing comma on line 8 said "line 7", a tab on line 6 "line 5"; and
// for a construct that begins on line 1 (a quote never closed) it names
// where the file ended instead. So the line is found again: the first
// prefix of the file that fails with the same complaint ends on the line
// at fault. The prefixes tried are the first line (when the library named
// the end), then from the line named on, at most syntaxScan of them; past
// that, the library's line stands.
func syntaxProblem(err error, data []byte) Problem {
	p := Problem{Msg: err.Error()}
	g := lineRe.FindStringSubmatch(p.Msg)
	if g == nil {
		return p
	}
	p.Line, _ = strconv.Atoi(g[1])
	p.Msg = "YAML syntax: " + g[2]
	if p.Line >= bytes.Count(data, []byte{'\n'}) && firstLineFails(data, g[2]) {
		p.Line = 1 // the library pointed at the end: the construct began on line 1
	} else if at := faultLine(data, g[2], max(p.Line, 1)); at > 0 {
		p.Line = at
	}
	return p
}

// firstLineFails reports whether the file's first line alone fails to
// parse with the complaint msg.
func firstLineFails(data []byte, msg string) bool {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		data = data[:i+1]
	}
	var n yaml.Node
	err := yaml.Unmarshal(data, &n)
	if err == nil {
		return false
	}
	g := lineRe.FindStringSubmatch(err.Error())
	return g != nil && g[2] == msg
}

// syntaxScan bounds how many lines faultLine tries past the library's.
const syntaxScan = 100

// faultLine is the first line, from `from` on, whose prefix of data fails
// to parse with the complaint msg; 0 when none within syntaxScan lines.
func faultLine(data []byte, msg string, from int) int {
	end, line := 0, 1
	for line < from && end < len(data) { // skip to the end of line from-1
		i := bytes.IndexByte(data[end:], '\n')
		if i < 0 {
			return 0
		}
		end += i + 1
		line++
	}
	for ; line < from+syntaxScan && end < len(data); line++ {
		i := bytes.IndexByte(data[end:], '\n')
		if i < 0 {
			end = len(data)
		} else {
			end += i + 1
		}
		var n yaml.Node
		err := yaml.Unmarshal(data[:end], &n)
		if err == nil {
			continue
		}
		if g := lineRe.FindStringSubmatch(err.Error()); g != nil && g[2] == msg {
			return line
		}
	}
	return 0
}

func sectionName(goType string) string {
	switch goType {
	case "Config":
		return "the top level"
	case "routesFile":
		return "an included file (it holds routes: only)"
	default:
		return strings.ToLower(goType)
	}
}

func yamlKind(tag string) string {
	switch tag {
	case "str":
		return "string"
	case "seq":
		return "list"
	case "map":
		return "mapping"
	case "int", "float":
		return "number"
	default:
		return tag
	}
}

func goKind(t string) string {
	switch {
	case t == "int":
		return "a whole number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "config."):
		return "a mapping"
	default:
		return t
	}
}
