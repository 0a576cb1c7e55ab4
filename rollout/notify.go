package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"canaryd/config"

	"go.uber.org/zap"
)

// notifier POSTs rollout events to webhooks from one goroutine, so a slow
// or dead receiver never blocks a controller. Its queue is bounded: when it
// is full, events are dropped with a warning.
type notifier struct {
	log    *zap.Logger
	queue  chan hookEvent
	client *http.Client

	mu    sync.Mutex
	hooks map[string]config.Webhook
}

type hookEvent struct {
	hook    config.Webhook
	payload []byte
}

// webhookPayload is what a webhook receives.
type webhookPayload struct {
	Route string `json:"route"`
	Event
}

func newNotifier(log *zap.Logger) *notifier {
	return &notifier{log: log, queue: make(chan hookEvent, 256), client: &http.Client{}, hooks: map[string]config.Webhook{}}
}

func (n *notifier) set(h map[string]config.Webhook) {
	n.mu.Lock()
	n.hooks = h
	n.mu.Unlock()
}

// send queues an event for the route's webhook, if it has one; it never
// blocks.
func (n *notifier) send(route string, e Event) {
	n.mu.Lock()
	h, ok := n.hooks[route]
	n.mu.Unlock()
	if !ok {
		return
	}
	body, err := json.Marshal(webhookPayload{Route: route, Event: e})
	if err != nil {
		return
	}
	select {
	case n.queue <- hookEvent{hook: h, payload: body}:
	default:
		n.log.Warn("webhook queue full; event dropped", zap.String("route", route), zap.Stringer("to", e.To))
	}
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
	n.log.Warn("webhook delivery failed", zap.String("url", ev.hook.URL), zap.Int("attempts", *ev.hook.Retries+1), zap.Error(last))
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
