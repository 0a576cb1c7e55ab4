// Package canaryd embeds the shipped config.yaml, so that `canaryd demo`
// runs on exactly the file users read and edit.
package canaryd

import (
	"bytes"
	_ "embed"
)

//go:embed config.yaml
var defaultConfig []byte

// DefaultConfig returns a copy of the shipped config.yaml.
func DefaultConfig() []byte { return bytes.Clone(defaultConfig) }
