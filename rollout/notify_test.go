package rollout

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"canaryd/metrics"

	"github.com/prometheus/client_golang/prometheus"
)

// receiver is a real HTTP server that keeps every body it is sent, with
// its signature header.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	bodies [][]byte
	sigs   []string
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, b)
		r.sigs = append(r.sigs, req.Header.Get("X-Canary-Signature"))
		r.mu.Unlock()
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) got(t *testing.T, n int) [][]byte {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		k := len(r.bodies)
		r.mu.Unlock()
		if k >= n {
			break
		}
	}
	time.Sleep(100 * time.Millisecond) // and nothing more arrives
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bodies) != n {
		t.Fatalf("%s received %d messages, want %d:\n%s", r.URL, len(r.bodies), n, joinBodies(r.bodies))
	}
	return r.bodies
}

func joinBodies(bs [][]byte) string {
	var s []string
	for _, b := range bs {
		s = append(s, string(b))
	}
	return strings.Join(s, "\n")
}

// Each receiver gets the events it asks for, in its format, with its
// labels; json bodies are signed. The chat formats are checked against
// the shapes Slack (Block Kit) and Teams (an Adaptive Card message)
// document; nothing here reaches either vendor.
func TestNotify(t *testing.T) {
	js, slack, teams := newReceiver(t), newReceiver(t), newReceiver(t)
	dir := t.TempDir()
	key := writeFile(t, dir, "k", "notify-key-0123456789")
	m := NewManager(Deps{Counters: newSim(), Pools: allUp{}, Metrics: metrics.NewRollouts(prometheus.NewRegistry()), StateDir: t.TempDir()})
	routes := webRoutes(t, `{ stable: blue, canary: green, steps: [10, 100],
      notify: [
        { url: "`+js.URL+`", secret_file: `+key+`, events: [rolled_back, approval], labels: { service: checkout, environment: prod } },
        { url: "`+slack.URL+`", format: slack, labels: { service: checkout } },
        { url: "`+teams.URL+`", format: teams, events: [rolled_back] } ] }`)
	m.SetWebhooks(routes)
	m.Start()
	defer m.Close()
	m.Sync(routes)
	if _, err := m.Control("web", Abort); err != nil {
		t.Fatal(err)
	}

	b := js.got(t, 1)[0]
	var p struct {
		Route, Event, To, Reason string
		Labels                   map[string]string
	}
	if err := json.Unmarshal(b, &p); err != nil || p.Route != "web" || p.Event != "rolled_back" || p.To != "rolled_back" || p.Labels["environment"] != "prod" {
		t.Errorf("json: %s (%v)", b, err)
	}
	if js.sigs[0] != Sign("notify-key-0123456789", b) {
		t.Errorf("json signature %q", js.sigs[0])
	}

	msgs := slack.got(t, 2) // progressing and rolled back (default: all but analysis)
	for _, b := range msgs {
		checkSlack(t, b)
	}
	if !strings.Contains(string(msgs[1]), "web: rolled back, step 1") || !strings.Contains(string(msgs[1]), `*service*\ncheckout`) {
		t.Errorf("slack message: %s", msgs[1])
	}
	checkTeams(t, teams.got(t, 1)[0])
}

// checkSlack holds a message to Block Kit's rules for incoming webhooks:
// a fallback text; blocks of known types; a header's plain_text at most
// 150 characters; a section's text at most 3000, its fields at most 10 of
// at most 2000; mrkdwn escapes &, < and >.
func checkSlack(t *testing.T, b []byte) {
	t.Helper()
	var p map[string]any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("slack: %v: %s", err, b)
	}
	for k := range p {
		if k != "text" && k != "blocks" {
			t.Errorf("slack: unknown top-level key %q", k)
		}
	}
	if s, _ := p["text"].(string); s == "" {
		t.Errorf("slack: no fallback text: %s", b)
	}
	blocks, _ := p["blocks"].([]any)
	if len(blocks) == 0 || len(blocks) > 50 {
		t.Fatalf("slack: %d blocks", len(blocks))
	}
	text := func(o any, kind string, max int) {
		t.Helper()
		m, _ := o.(map[string]any)
		s, _ := m["text"].(string)
		if m["type"] != kind || s == "" || len([]rune(s)) > max {
			t.Errorf("slack: text object %v; want %s of 1..%d characters", m, kind, max)
		}
	}
	for _, x := range blocks {
		bl := x.(map[string]any)
		switch bl["type"] {
		case "header":
			text(bl["text"], "plain_text", 150)
		case "section":
			if bl["text"] == nil && bl["fields"] == nil {
				t.Errorf("slack: a section with neither text nor fields")
			}
			if bl["text"] != nil {
				text(bl["text"], "mrkdwn", 3000)
			}
			if f, ok := bl["fields"].([]any); ok {
				if len(f) > 10 {
					t.Errorf("slack: %d fields", len(f))
				}
				for _, o := range f {
					text(o, "mrkdwn", 2000)
				}
			}
		default:
			t.Errorf("slack: block type %v", bl["type"])
		}
	}
}

// checkTeams holds a message to the shape Teams' webhooks document: type
// message, one attachment of contentType
// application/vnd.microsoft.card.adaptive whose content is an AdaptiveCard
// with a schema, a version and a body of TextBlocks and FactSets.
func checkTeams(t *testing.T, b []byte) {
	t.Helper()
	var p struct {
		Type        string `json:"type"`
		Attachments []struct {
			ContentType string          `json:"contentType"`
			ContentURL  *string         `json:"contentUrl"`
			Content     json.RawMessage `json:"content"`
		} `json:"attachments"`
	}
	if err := json.Unmarshal(b, &p); err != nil || p.Type != "message" || len(p.Attachments) != 1 || p.Attachments[0].ContentType != "application/vnd.microsoft.card.adaptive" {
		t.Fatalf("teams: %s (%v)", b, err)
	}
	var card struct {
		Schema  string           `json:"$schema"`
		Type    string           `json:"type"`
		Version string           `json:"version"`
		Body    []map[string]any `json:"body"`
	}
	if err := json.Unmarshal(p.Attachments[0].Content, &card); err != nil || card.Type != "AdaptiveCard" || card.Version == "" || !strings.HasPrefix(card.Schema, "http://adaptivecards.io/schemas/") || len(card.Body) == 0 {
		t.Fatalf("teams card: %s (%v)", p.Attachments[0].Content, err)
	}
	for _, el := range card.Body {
		switch el["type"] {
		case "TextBlock":
			if s, _ := el["text"].(string); s == "" {
				t.Errorf("teams: an empty TextBlock")
			}
		case "FactSet":
			for _, f := range el["facts"].([]any) {
				f := f.(map[string]any)
				if _, ok := f["title"].(string); !ok {
					t.Errorf("teams: fact %v", f)
				}
				if _, ok := f["value"].(string); !ok {
					t.Errorf("teams: fact %v", f)
				}
			}
		default:
			t.Errorf("teams: element %v", el["type"])
		}
	}
	if !strings.Contains(string(b), "web: rolled back") {
		t.Errorf("teams: %s", b)
	}
}
