// Package jsonpath reads one value out of a JSON document by a small,
// documented subset of JSONPath: the root $, then any number of .name,
// ['name'] or ["name"] (a key of an object) and [N] (an item of an array,
// from 0; a negative N counts from the end, -1 the last). No wildcards,
// slices, filters or recursion: a metric check needs one number, and a
// path that could match several would have to say which.
//
// Examples: $.results[0].series[0].values[0][1] (InfluxDB 1.x),
// $.data.result[0].value[1] (Prometheus), $['series'][-1].pointlist[0][1].
package jsonpath

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrMissing wraps every failure to find the path in a document: a key
// that is not there, an index past the end, a step into a value that is
// not an object or array.
var ErrMissing = errors.New("not in the document")

type step struct {
	key   string
	index int
	isIdx bool
}

// Path is a parsed path; the zero Path is $ (the whole document).
type Path struct {
	src   string
	steps []step
}

func (p Path) String() string {
	if p.src == "" {
		return "$"
	}
	return p.src
}

// Parse reads a path; its error names the position and what was expected.
func Parse(s string) (Path, error) {
	if !strings.HasPrefix(s, "$") {
		return Path{}, fmt.Errorf("%q must start with $ (the document), e.g. $.data.result[0].value[1]", s)
	}
	p := Path{src: s}
	i := 1
	for i < len(s) {
		switch s[i] {
		case '.':
			j := i + 1
			for j < len(s) && (s[j] == '_' || s[j] == '-' || s[j] >= '0' && s[j] <= '9' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z') {
				j++
			}
			if j == i+1 {
				return Path{}, fmt.Errorf("%q: a name must follow the dot at offset %d (use ['...'] for other characters)", s, i)
			}
			p.steps = append(p.steps, step{key: s[i+1 : j]})
			i = j
		case '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return Path{}, fmt.Errorf("%q: the [ at offset %d is not closed", s, i)
			}
			in := s[i+1 : i+end]
			if len(in) >= 2 && (in[0] == '\'' || in[0] == '"') {
				if in[len(in)-1] != in[0] || strings.IndexByte(in[1:len(in)-1], in[0]) >= 0 {
					return Path{}, fmt.Errorf("%q: the quoted name at offset %d must end with its quote, then ]", s, i)
				}
				p.steps = append(p.steps, step{key: in[1 : len(in)-1]})
			} else {
				n, err := strconv.Atoi(in)
				if err != nil {
					return Path{}, fmt.Errorf("%q: [%s] at offset %d is neither an index such as [0] nor a name such as ['key']", s, in, i)
				}
				p.steps = append(p.steps, step{index: n, isIdx: true})
			}
			i += end + 1
		default:
			return Path{}, fmt.Errorf("%q: unexpected %q at offset %d; use .name, ['name'] or [N]", s, s[i], i)
		}
	}
	return p, nil
}

// Select finds the path's value in doc, a document as encoding/json
// decodes it into an any (objects map[string]any, arrays []any).
func (p Path) Select(doc any) (any, error) {
	at := "$"
	v := doc
	for _, st := range p.steps {
		if st.isIdx {
			a, ok := v.([]any)
			if !ok {
				return nil, fmt.Errorf("%s is %s, not an array: %w", at, kind(v), ErrMissing)
			}
			i := st.index
			if i < 0 {
				i += len(a)
			}
			if i < 0 || i >= len(a) {
				return nil, fmt.Errorf("%s has %d items, no [%d]: %w", at, len(a), st.index, ErrMissing)
			}
			v = a[i]
			at += "[" + strconv.Itoa(st.index) + "]"
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s is %s, not an object: %w", at, kind(v), ErrMissing)
		}
		if v, ok = m[st.key]; !ok {
			return nil, fmt.Errorf("%s has no key %q: %w", at, st.key, ErrMissing)
		}
		at += "." + st.key
	}
	return v, nil
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	}
	return "a number"
}
