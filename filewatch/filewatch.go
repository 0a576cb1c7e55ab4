// Package filewatch tells when files may have changed, for every way a
// file changes: written in place, replaced by rename (editors, mv),
// deleted and created again, or swapped under a symlink (a Kubernetes
// ConfigMap or Secret mount). It imports the standard library and
// fsnotify only: the config file and the TLS files it names are watched
// through it.
package filewatch

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
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
	return Files(ctx, []string{path}, debounce, notify)
}

// watched is one file of Files: where it is and what it resolves to.
// A base with a wildcard (*, ?, [) is a glob: any file of the directory
// it matches is watched, come and gone ones included.
type watched struct {
	abs, dir, base string
	target         string // the resolved path; "" when missing
	glob           bool
}

// Files is Watch for several files (the config, the files it includes and
// the certificate files it names) on one inotify instance: notify runs
// when any of them may have changed. A path whose file name has a
// wildcard is a glob (routes.d/*.yaml): a file that matches it and is
// written, created, removed or renamed notifies, and so does a
// Kubernetes mount's swap of its "..data" link in that directory.
//
// It is one function, a little over 80 lines, on purpose: the watcher, the
// watched files and the debounce timer are the state of one select loop.
func Files(ctx context.Context, paths []string, debounce time.Duration, notify func(reason string)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w (raise fs.inotify.max_user_instances?)", strings.Join(paths, ", "), err)
	}
	defer w.Close()
	dirs := map[string]bool{}
	add := func(d string) error {
		if dirs[d] {
			return nil
		}
		if err := w.Add(d); err != nil {
			return err
		}
		dirs[d] = true
		return nil
	}
	files := make([]*watched, 0, len(paths))
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return fmt.Errorf("watch %s: %w", p, err)
		}
		f := &watched{abs: abs, dir: filepath.Dir(abs), base: filepath.Base(abs)}
		f.glob = strings.ContainsAny(f.base, "*?[")
		if err := add(f.dir); err != nil {
			return fmt.Errorf("watch directory %s: %w", f.dir, err)
		}
		files = append(files, f)
	}
	// follow also watches the directory a symlink points into, so that an
	// edit made through the link's target is seen too. (A directory that
	// stops being a target stays watched: its events are filtered out, and
	// Kubernetes removes the old ones, which ends their watch.)
	follow := func(f *watched) bool {
		if f.glob {
			return false // its files are matched by name in the directory
		}
		now := resolve(f.abs)
		if now == f.target {
			return false
		}
		f.target = now
		if td := filepath.Dir(now); now != "" && td != f.dir {
			_ = add(td)
		}
		return true
	}
	for _, f := range files {
		follow(f)
	}
	// The files may have changed between the caller's read and now, when
	// no watch was armed yet: ask for one check so that edit is not lost.
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
			for _, f := range files {
				if r, ok := relevant(ev, f); ok {
					reason = r
					if len(files) > 1 {
						reason = f.base + ": " + r
					}
					timer.Reset(debounce)
				} else if follow(f) {
					reason = f.base + ": symlink target changed"
					timer.Reset(debounce)
				}
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			reason = "watch error: " + err.Error()
			timer.Reset(debounce)
		case <-timer.C:
			for _, f := range files {
				follow(f)
			}
			notify(reason)
		}
	}
}

// relevant says whether an event concerns a watched file: its name in
// the watched directory (or, for a glob, a name it matches, or a
// Kubernetes mount's "..data" swap there), or the file it resolves to.
// Attribute changes alone (touch, chmod) are not: the content is the
// same.
func relevant(ev fsnotify.Event, f *watched) (string, bool) {
	if ev.Op == fsnotify.Chmod {
		return "", false
	}
	name := filepath.Clean(ev.Name)
	inDir := filepath.Dir(name) == f.dir
	switch {
	case f.glob && inDir:
		b := filepath.Base(name)
		if ok, _ := filepath.Match(f.base, b); ok {
			return b + " " + opName(ev.Op), true
		}
		if strings.HasPrefix(b, "..") {
			return "mount swapped (" + b + ")", true
		}
	case inDir && filepath.Base(name) == f.base, f.target != "" && name == f.target:
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
