package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"canaryd/config"

	"go.uber.org/zap"
)

// notifier POSTs rollout events to their receivers (rollout.notify, and
// rollout.webhook as one json entry) from one goroutine, so a slow or dead
// receiver never blocks a controller. Its queue is bounded: when it is
// full, events are dropped with a warning.
type notifier struct {
	log    *zap.Logger
	queue  chan hookEvent
	client *http.Client

	mu    sync.Mutex
	hooks map[string][]config.Notify
}

type hookEvent struct {
	hook    config.Notify
	payload []byte
}

// webhookPayload is what a json receiver gets: the event, its route, its
// kind of event (what events: filters on) and the receiver's labels.
type webhookPayload struct {
	Route string `json:"route"`
	// Event is what notify's events name it: the phase moved to, or gate,
	// approval, analysis.
	Event string `json:"event"`
	eventBody
	Labels map[string]string `json:"labels,omitempty"`
}

// eventBody is Event, embedded under another name (webhookPayload's Event
// field is the event's name).
type eventBody = Event

func newNotifier(log *zap.Logger) *notifier {
	return &notifier{log: log, queue: make(chan hookEvent, 256), client: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, hooks: map[string][]config.Notify{}}
}

func (n *notifier) set(h map[string][]config.Notify) {
	n.mu.Lock()
	n.hooks = h
	n.mu.Unlock()
}

// eventName is what notify's events filter an event by.
func eventName(e Event) string {
	switch {
	case e.Approval != nil:
		return "approval"
	case e.Kind == KindGate:
		return "gate"
	case e.Kind == KindAnalysis:
		return "analysis"
	}
	return string(e.To)
}

// send queues an event for each of the route's receivers that wants it;
// it never blocks.
func (n *notifier) send(route string, e Event) {
	n.mu.Lock()
	hooks := n.hooks[route]
	n.mu.Unlock()
	name := eventName(e)
	for _, h := range hooks {
		// An approval that moved the rollout is its phase's event too.
		if !slices.Contains(h.Events, name) && !(e.Kind == KindTransition && slices.Contains(h.Events, string(e.To))) {
			continue
		}
		body, err := render(h, route, name, e)
		if err != nil {
			continue
		}
		select {
		case n.queue <- hookEvent{hook: h, payload: body}:
		default:
			n.log.Warn("notification queue full; event dropped", zap.String("route", route), zap.String("event", name), zap.String("url", h.URL))
		}
	}
}

// render is the body of an event for a receiver's format.
func render(h config.Notify, route, name string, e Event) ([]byte, error) {
	switch h.Format {
	case config.NotifySlack:
		return json.Marshal(slackMessage(h.Labels, route, e))
	case config.NotifyTeams:
		return json.Marshal(teamsMessage(h.Labels, route, e))
	}
	return json.Marshal(webhookPayload{Route: route, Event: name, eventBody: e, Labels: h.Labels})
}

// headline is an event in one line: "web: rolled back at step 2 (canary 0%)".
func headline(route string, e Event) string {
	w := fmt.Sprintf("canary %s%%", config.Percent(e.WeightBP))
	switch {
	case e.Approval != nil && e.Kind != KindTransition:
		return fmt.Sprintf("%s: %s approved by %s, step %d (%s)", route, e.Approval.Gate, e.Approval.By, e.Step, w)
	case e.Kind == KindGate:
		return fmt.Sprintf("%s: gates answered at step %d (%s)", route, e.Step, w)
	case e.Kind == KindAnalysis:
		return fmt.Sprintf("%s: analysis held step %d (%s)", route, e.Step, w)
	}
	return fmt.Sprintf("%s: %s, step %d (%s)", route, strings.ReplaceAll(string(e.To), "_", " "), e.Step, w)
}

// facts are the labels, sorted, then what happened: the verdicts that did
// not pass.
func facts(labels map[string]string, e Event) [][2]string {
	var out [][2]string
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, [2]string{k, labels[k]})
	}
	for _, v := range e.Verdicts {
		if v.Result != Pass || v.Check == "tripwire" || strings.HasPrefix(v.Check, "approval:") {
			out = append(out, [2]string{v.Check, string(v.Result) + ": " + clip(v.Reason, 300)})
		}
	}
	return out
}

// Slack's incoming webhooks take Block Kit (api.slack.com/block-kit):
// text is the notification's fallback; a header block (plain_text, at
// most 150 characters), a section (mrkdwn, at most 3000), and a section of
// fields (at most 10, each at most 2000).
type slackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type slackBlock struct {
	Type   string      `json:"type"`
	Text   *slackText  `json:"text,omitempty"`
	Fields []slackText `json:"fields,omitempty"`
}

type slackPayload struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

func slackMessage(labels map[string]string, route string, e Event) slackPayload {
	head := headline(route, e)
	p := slackPayload{Text: clip(head+": "+e.Reason, 3000), Blocks: []slackBlock{
		{Type: "header", Text: &slackText{Type: "plain_text", Text: clip(head, 150)}},
		{Type: "section", Text: &slackText{Type: "mrkdwn", Text: truncate(slackEscape(clip(e.Reason, 2900)), 2900)}},
	}}
	var fields []slackText
	for _, f := range facts(labels, e) {
		if len(fields) == 10 {
			break
		}
		fields = append(fields, slackText{Type: "mrkdwn", Text: truncate("*"+slackEscape(clip(f[0], 100))+"*\n"+slackEscape(f[1]), 1900)})
	}
	if len(fields) > 0 {
		p.Blocks = append(p.Blocks, slackBlock{Type: "section", Fields: fields})
	}
	return p
}

// slackEscape escapes the three characters Slack's mrkdwn reserves.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// Teams' incoming webhooks (and Workflows' "post to a channel when a
// webhook request is received") take a message with one Adaptive Card
// attachment (adaptivecards.io): a bold TextBlock, the reason, and a
// FactSet.
type teamsPayload struct {
	Type        string            `json:"type"`
	Attachments []teamsAttachment `json:"attachments"`
}

type teamsAttachment struct {
	ContentType string    `json:"contentType"`
	ContentURL  *string   `json:"contentUrl"`
	Content     teamsCard `json:"content"`
}

type teamsCard struct {
	Schema  string           `json:"$schema"`
	Type    string           `json:"type"`
	Version string           `json:"version"`
	Body    []map[string]any `json:"body"`
}

func teamsMessage(labels map[string]string, route string, e Event) teamsPayload {
	body := []map[string]any{
		{"type": "TextBlock", "text": headline(route, e), "weight": "Bolder", "size": "Medium", "wrap": true},
		{"type": "TextBlock", "text": e.Reason, "wrap": true},
	}
	var fs []map[string]string
	for _, f := range facts(labels, e) {
		fs = append(fs, map[string]string{"title": f[0], "value": f[1]})
	}
	if len(fs) > 0 {
		body = append(body, map[string]any{"type": "FactSet", "facts": fs})
	}
	return teamsPayload{Type: "message", Attachments: []teamsAttachment{{
		ContentType: "application/vnd.microsoft.card.adaptive",
		Content:     teamsCard{Schema: "http://adaptivecards.io/schemas/adaptive-card.json", Type: "AdaptiveCard", Version: "1.4", Body: body},
	}}}
}

func (n *notifier) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-n.queue:
			n.deliver(ctx, ev)
		}
	}
}

// deliver tries once plus Retries times, backing off between attempts.
func (n *notifier) deliver(ctx context.Context, ev hookEvent) {
	var last error
	for attempt := 0; attempt <= *ev.hook.Retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		if last = n.post(ctx, ev); last == nil {
			return
		}
	}
	n.log.Warn("notification delivery failed", zap.String("url", ev.hook.URL), zap.String("format", ev.hook.Format),
		zap.Int("attempts", *ev.hook.Retries+1), zap.Error(last))
}

func (n *notifier) post(ctx context.Context, ev hookEvent) error {
	ctx, cancel := context.WithTimeout(ctx, ev.hook.Timeout.D())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ev.hook.URL, bytes.NewReader(ev.payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "canaryd-rollout")
	if key := ev.hook.Secret(); key != "" {
		req.Header.Set("X-Canary-Signature", Sign(key, ev.payload))
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
