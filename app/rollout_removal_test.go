package app

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"canaryd/metrics"
	"canaryd/rollout"
)

// Removing a route's rollout block never moves traffic silently. After a
// promotion the file still gives the old pool its weight; after an abort,
// the canary may still have its first share: a reload that drops the block
// with those weights is refused, naming the weights to write, and the
// served weights stay. Written in the file (here in the same edit), the
// block goes and nothing moves.
func TestRemovingARolloutNeverMovesTrafficSilently(t *testing.T) {
	for _, tc := range []struct {
		action      rollout.Action
		fileGreen   int // green's weight in the file, in percent
		servedGreen int // after the action
		write       string
	}{
		{rollout.Promote, 0, 100, "set the file's weights to blue: 0, green: 100"},
		{rollout.Abort, 10, 0, "set the file's weights to blue: 100, green: 0"},
	} {
		t.Run(tc.action.String(), func(t *testing.T) {
			blue, green := newNamed(t, "blue", 0), newNamed(t, "green", 0)
			dir := t.TempDir()
			path := filepath.Join(dir, "config.yaml")
			state := fmt.Sprintf("state_dir: %q", filepath.Join(dir, "state"))
			block := "    rollout: { stable: blue, canary: green, steps: [50, 100], interval: 1m }\n"
			writeFile(t, path, configText(tc.fileGreen, blue.URL, green.URL, state)+block)
			r := startRig(t, path)
			if _, err := r.srv.Control("web", tc.action); err != nil {
				t.Fatalf("%s: %v", tc.action, err)
			}
			waitFor(t, 5*time.Second, func() bool { return r.greenWeight() == tc.servedGreen })

			// The block removed, the file's weights as they were: refused.
			writeFile(t, path, configText(tc.fileGreen, blue.URL, green.URL, state))
			res := r.next(metrics.ReloadFailed, 5*time.Second)
			for _, want := range []string{`route "web": removing its rollout block would move traffic`, tc.write} {
				if res.Err == nil || !strings.Contains(res.Err.Error(), want) {
					t.Fatalf("reload error %v lacks %q", res.Err, want)
				}
			}
			if g := r.greenWeight(); g != tc.servedGreen {
				t.Fatalf("green at %d%% after the refused reload, want %d%%", g, tc.servedGreen)
			}
			// As the message says: the served weights in the file, the
			// block gone in the same edit.
			writeFile(t, path, configText(tc.servedGreen, blue.URL, green.URL, state))
			r.next(metrics.ReloadApplied, 5*time.Second)
			if g := r.greenWeight(); g != tc.servedGreen {
				t.Fatalf("green at %d%% once the block is gone, want %d%%", g, tc.servedGreen)
			}
			if _, err := r.srv.Control("web", rollout.Promote); err == nil {
				t.Error("the route still has a rollout")
			}
		})
	}
}

func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v", within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
