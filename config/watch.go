package config

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch calls notify when the file at path may have changed, until ctx
// ends. It watches the file's directory, not the file: editors replace the
// file by rename, `mv` puts a new inode in place, and a delete-and-recreate
// leaves nothing to watch on the old inode. It also follows a symlinked file
// (a Kubernetes ConfigMap mount swaps `..data` under it) by comparing where
// the path resolves to after each event.
//
// Events are debounced: notify runs once debounce has passed without a new
// event. A watch error or an event-queue overflow also notifies, since an
// event may have been lost. Whether the content really changed is for the
// caller to decide (by hash); notify may be called when it did not.
//
// Once the watch is armed, Watch calls notify("watch started") once, so
// that an edit made before it was armed is not missed. Watch returns an
// error only if the watch cannot start.
func Watch(ctx context.Context, path string, debounce time.Duration, notify func(reason string)) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("watch %s: %w", path, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w (raise fs.inotify.max_user_instances?)", path, err)
	}
	defer w.Close()
	dir, base := filepath.Dir(abs), filepath.Base(abs)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch directory %s: %w", dir, err)
	}
	target := resolve(abs)
	targetDir := ""
	follow := func() {
		// Watch the directory the symlink points into as well, so that an
		// edit made through the link's target is seen too.
		td := filepath.Dir(target)
		if target == "" || td == dir || td == targetDir {
			return
		}
		if targetDir != "" {
			_ = w.Remove(targetDir) // may be gone already
		}
		if w.Add(td) == nil {
			targetDir = td
		}
	}
	follow()
	// The file may have changed between the caller's read and now, when no
	// watch was armed yet: ask for one check so that edit is not lost.
	notify("watch started")

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	reason := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if r, ok := relevant(ev, dir, base, target); ok {
				reason = r
				timer.Reset(debounce)
				continue
			}
			if now := resolve(abs); now != target {
				target = now
				follow()
				reason = "symlink target changed"
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			reason = "watch error: " + err.Error()
			timer.Reset(debounce)
		case <-timer.C:
			if now := resolve(abs); now != target {
				target = now
				follow()
			}
			notify(reason)
		}
	}
}

// relevant says whether an event concerns the config file itself: its name
// in the watched directory, or the file it resolves to. Attribute changes
// alone (touch, chmod) are not: the content is the same.
func relevant(ev fsnotify.Event, dir, base, target string) (string, bool) {
	if ev.Op == fsnotify.Chmod {
		return "", false
	}
	name := filepath.Clean(ev.Name)
	if (filepath.Dir(name) == dir && filepath.Base(name) == base) || (target != "" && name == target) {
		return "file " + opName(ev.Op), true
	}
	return "", false
}

func opName(op fsnotify.Op) string {
	switch {
	case op.Has(fsnotify.Create):
		return "created"
	case op.Has(fsnotify.Write):
		return "written"
	case op.Has(fsnotify.Remove):
		return "removed"
	case op.Has(fsnotify.Rename):
		return "renamed"
	default:
		return op.String()
	}
}

// resolve follows symlinks; "" when the file does not exist right now.
func resolve(p string) string {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return ""
	}
	return r
}
