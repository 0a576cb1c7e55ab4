package config

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Where a gate runs in a release (rollout.gates[].at).
const (
	// GatePreTraffic: before the canary gets its first live or shadow
	// request (smoke tests).
	GatePreTraffic = "pre_traffic"
	// GateStep: after each step's analysis passes, before the next weight.
	GateStep = "step"
	// GatePrePromotion: before the canary goes to 100%, after the step gates.
	GatePrePromotion = "pre_promotion"
	// GatePostPromotion: during the bake after 100% (rollout.bake).
	GatePostPromotion = "post_promotion"
	// GateRollback: after a rollback; advisory (its verdict decides nothing).
	GateRollback = "rollback"
)

// GatePoints lists every gate point, in the order a release meets them
// (a new slice at every call: no package state).
func GatePoints() []string {
	return []string{GatePreTraffic, GateStep, GatePrePromotion, GatePostPromotion, GateRollback}
}

// Kinds of gate.
const (
	GateHTTP     = "http"
	GateApproval = "approval"
)

// Gate defaults.
const (
	DefaultGateTimeout = DefaultWebhookTimeout * 2 // 10s: a smoke test takes longer than a notification
	DefaultGateRetries = 2
	DefaultGateMethod  = "POST"
	// DefaultApprovalExpires: a day for someone to answer.
	DefaultApprovalExpires = 24 * time.Hour
)

// What an approval gate does when nobody answers within expires.
const (
	OnExpiryPause = "pause"
	OnExpiryAbort = "abort"
)

// Gate is an outside check a rollout waits on at one point of its release:
// an HTTP endpoint that answers pass, fail or inconclusive.
type Gate struct {
	// Name shows in status, history and metrics. Required, unique in the
	// rollout.
	Name string `yaml:"name"`
	// At is where the gate runs: pre_traffic, step, pre_promotion,
	// post_promotion or rollback. Required.
	At string `yaml:"at"`
	// Kind: http (the default): canaryd asks URL; approval: a person
	// answers (canaryd approve, the API, the dashboard).
	Kind string `yaml:"kind"`
	// Expires (approval): how long to wait for the answer. Default 24h.
	Expires Duration `yaml:"expires"`
	// OnExpiry (approval): pause or abort when nobody answered within
	// expires. Default pause.
	OnExpiry string `yaml:"on_expiry"`
	// URL to call (http). Required for http gates.
	URL string `yaml:"url"`
	// Method of the request. Default POST.
	Method string `yaml:"method"`
	// Headers sent with the request. Default none.
	Headers map[string]Header `yaml:"headers"`
	// Body replaces the JSON description canaryd sends; {{route}},
	// {{release}}, {{gate}}, {{at}}, {{stable}}, {{canary}}, {{step}},
	// {{weight}} and {{next_weight}} are filled in. Default: the JSON
	// description.
	Body string `yaml:"body"`
	// Timeout of one attempt. Default 10s.
	Timeout Duration `yaml:"timeout"`
	// Retries after an inconclusive attempt (timeout, connection error,
	// 429, 503). Default 2.
	Retries *int `yaml:"retries"`
	// SecretFile holds the key of the X-Canary-Signature header (hex
	// HMAC-SHA256 of the body). Default: unsigned.
	SecretFile string `yaml:"secret_file"`
	// DryRun: the verdict is recorded and shown but decides nothing.
	// Default false.
	DryRun bool `yaml:"dry_run"`

	secret string // SecretFile's content, read by Validate
}

// Secret is the key in SecretFile ("" when unsigned), read when the
// config was validated: a reload picks up a rotated key.
func (g *Gate) Secret() string { return g.secret }

// Header is one header of an outside request: a value, or a file that
// holds it (a token that must not sit in the config). It is written as
// a string, or as { value: V } or { file: PATH }.
type Header struct {
	// Value of the header.
	Value string `yaml:"value"`
	// File holding the value (trimmed of surrounding space), read when the
	// config is validated.
	File string `yaml:"file"`

	fromFile string
}

// Text is the header's value: Value, or File's content.
func (h Header) Text() string {
	if h.File != "" {
		return h.fromFile
	}
	return h.Value
}

// UnmarshalYAML takes a string, or a mapping with value or file.
func (h *Header) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		h.Value = n.Value
		return nil
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind != yaml.ScalarNode {
				return lineError(v, fmt.Sprintf("header %s must be a string", k.Value))
			}
			switch k.Value {
			case "value":
				h.Value = v.Value
			case "file":
				h.File = v.Value
			default:
				return lineError(k, fmt.Sprintf("a header has value or file, not %q", k.Value))
			}
		}
		if (h.Value == "") == (h.File == "") {
			return lineError(n, "a header needs exactly one of value and file")
		}
		return nil
	}
	return lineError(n, "a header is a string, or { value: V } or { file: PATH }")
}

func (g *Gate) applyDefaults() {
	setStr(&g.Kind, GateHTTP)
	if g.Kind == GateApproval {
		setDur(&g.Expires, DefaultApprovalExpires)
		setStr(&g.OnExpiry, OnExpiryPause)
	}
	setStr(&g.Method, DefaultGateMethod)
	g.Method = strings.ToUpper(g.Method)
	setDur(&g.Timeout, DefaultGateTimeout)
	setIntPtr(&g.Retries, DefaultGateRetries)
}
