package config

// Formats of a notification.
const (
	NotifyJSON  = "json"
	NotifySlack = "slack"
	NotifyTeams = "teams"
)

// NotifyEvents lists what rollout.notify[].events may name: the phases a
// rollout moves to, and gate, approval and analysis (a new slice at every
// call).
func NotifyEvents() []string {
	return []string{"idle", "shadowing", "segment", "progressing", "paused", "baking", "promoted", "rolled_back", "gate", "approval", "analysis"}
}

// DefaultNotifyEvents is every event but analysis (a step that holds
// records one every interval: too many for a chat room).
func DefaultNotifyEvents() []string {
	all := NotifyEvents()
	return all[:len(all)-1]
}

// Notify sends a rollout's events to a receiver: a JSON webhook, or a
// Slack or Teams channel's incoming webhook.
type Notify struct {
	// URL to POST to. Required.
	URL string `yaml:"url"`
	// Format: json (canaryd's event), slack (Block Kit) or teams (an
	// Adaptive Card). Default json.
	Format string `yaml:"format"`
	// Labels go into every message (service, environment, version...).
	// Default none.
	Labels map[string]string `yaml:"labels"`
	// SecretFile holds the key of the X-Canary-Signature header (hex
	// HMAC-SHA256 of the body). Default: unsigned.
	SecretFile string `yaml:"secret_file"`
	// Events sent: phase names, gate, approval, analysis. Default: all
	// but analysis.
	Events []string `yaml:"events"`
	// Timeout of one attempt. Default 5s.
	Timeout Duration `yaml:"timeout"`
	// Retries after a failed attempt. Default 3.
	Retries *int `yaml:"retries"`

	secret string
}

// Secret is the key in SecretFile ("" when unsigned), read when the
// config was validated.
func (n *Notify) Secret() string { return n.secret }

func (n *Notify) applyDefaults() {
	setStr(&n.Format, NotifyJSON)
	if len(n.Events) == 0 {
		n.Events = DefaultNotifyEvents()
	}
	setDur(&n.Timeout, DefaultWebhookTimeout)
	setIntPtr(&n.Retries, DefaultWebhookRetries)
}
