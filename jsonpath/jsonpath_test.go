package jsonpath

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const influx = `{"results":[{"statement_id":0,"series":[{"name":"checkout","columns":["time","rate"],"values":[["2026-12-05T10:00:00Z",0.031]]}]}]}`
const prom = `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1765000000.123,"0.5"]}]}}`

func doc(t testing.TB, s string) any {
	var v any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSelect(t *testing.T) {
	for _, tc := range []struct {
		doc, path, want string
		missing         string // the error's text, when missing
	}{
		{influx, "$.results[0].series[0].values[0][1]", "0.031", ""},
		{influx, "$['results'][0][\"series\"][-1].values[-1][-1]", "0.031", ""},
		{prom, "$.data.result[0].value[1]", "0.5", ""},
		{`{"results":[{"statement_id":0}]}`, "$.results[0].series[0].values[0][1]", "", `$.results[0] has no key "series"`},
		{`{"a":[]}`, "$.a[0]", "", "$.a has 0 items, no [0]"},
		{`{"a":3}`, "$.a.b", "", "$.a is a number, not an object"},
		{`{"a":{"b":1}}`, "$.a[0]", "", "$.a is an object, not an array"},
		{`{"a b":{"c-d":7}}`, "$['a b'].c-d", "7", ""},
		{`7`, "$", "7", ""},
	} {
		p, err := Parse(tc.path)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		v, err := p.Select(doc(t, tc.doc))
		if tc.missing != "" {
			if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), tc.missing) {
				t.Errorf("%s: %v; want missing: %s", tc.path, err, tc.missing)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		got := ""
		switch v := v.(type) {
		case json.Number:
			got = v.String()
		case string:
			got = v
		}
		if got != tc.want {
			t.Errorf("%s: %v, want %s", tc.path, v, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for path, want := range map[string]string{
		"results[0]":    "must start with $",
		"$.":            "a name must follow the dot",
		"$.a[0":         "is not closed",
		"$.a[x]":        "neither an index",
		"$.a['x]":       "must end with its quote",
		"$.a[*]":        "neither an index",
		"$..a":          "a name must follow the dot",
		"$a":            "unexpected 'a'",
		"$.a[?(@.x)]":   "neither an index",
		"$['a'b']":      "must end with its quote",
		"$.results[0] ": "unexpected ' '",
	} {
		if _, err := Parse(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want %q", path, err, want)
		}
	}
}

// Any input parses or is refused with an error, never a panic; a path that
// parses selects from any document without one, and its String is the
// input.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"$", "$.a", "$.results[0].series[0].values[0][1]", "$['a b'][\"c\"][-1]", "$.a[", "$..x", "$.a[99999999999999999999]", "$[-1][0]"} {
		f.Add(s, influx)
	}
	f.Add("$.data.result[0].value[1]", prom)
	f.Fuzz(func(t *testing.T, path, body string) {
		p, err := Parse(path)
		if err != nil {
			return
		}
		if p.String() != path {
			t.Fatalf("String %q of %q", p.String(), path)
		}
		var v any
		if json.Unmarshal([]byte(body), &v) != nil {
			return
		}
		if _, err := p.Select(v); err != nil && !errors.Is(err, ErrMissing) {
			t.Fatalf("%q on %q: %v is not ErrMissing", path, body, err)
		}
	})
}
