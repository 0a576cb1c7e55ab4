package config

import (
	"strings"

	"canaryd/jsonpath"
)

// What an http check does when its path finds nothing.
const (
	MissingHold = "hold"
	MissingFail = "fail"
)

// HTTPCheck reads one number from a metric source's JSON API (InfluxDB,
// Datadog, New Relic, CloudWatch, Prometheus...) and holds it to bounds.
// In url and body, {{route}}, {{pool}} and {{canary}} (the canary pool),
// {{stable}}, {{window}} (the evidence's span, e.g. 45s), {{start}} and
// {{end}} (RFC 3339, UTC), {{start_unix}} and {{end_unix}} are filled in;
// in url, query-escaped.
type HTTPCheck struct {
	// Name shows as http:NAME in verdicts. Required, unique.
	Name string `yaml:"name"`
	// URL to ask. Required.
	URL string `yaml:"url"`
	// Method of the request. Default GET.
	Method string `yaml:"method"`
	// Headers sent (a value, or a file that holds it). Default none.
	Headers map[string]Header `yaml:"headers"`
	// Body sent. Default none.
	Body string `yaml:"body"`
	// JSONPath of the number in the answer (jsonpath's subset). Required.
	JSONPath string `yaml:"json_path"`
	// Min and Max bound the number; at least one is set.
	Min *float64 `yaml:"min"`
	Max *float64 `yaml:"max"`
	// Missing: what an answer without the number is: hold (inconclusive,
	// as missing data) or fail. Default hold.
	Missing string `yaml:"missing"`
	// Timeout of one request. Default 5s.
	Timeout Duration `yaml:"timeout"`
	// DryRun: the verdict is recorded and shown but decides nothing.
	// Default false.
	DryRun bool `yaml:"dry_run"`

	path jsonpath.Path
}

// Path is JSONPath, parsed when the config was validated.
func (c *HTTPCheck) Path() jsonpath.Path { return c.path }

func (c *HTTPCheck) applyDefaults() {
	setStr(&c.Method, "GET")
	c.Method = strings.ToUpper(c.Method)
	setStr(&c.Missing, MissingHold)
	setDur(&c.Timeout, DefaultPromTimeout)
}
