package registry

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// File is a single process's Store: every registration in one JSON file
// (state_dir/instances.json), rewritten whole on each change through a
// temporary file and a rename, so a crash leaves the old file or the new
// one, never half of one.
type File struct {
	path string
	now  func() time.Time

	// mu guards the fields below it.
	mu sync.Mutex
	// regs is what the registrations are (saved, or renewed since).
	regs map[Key]Registration
	// saved is when the file was last written; writes counts them;
	// dirty: regs holds renewals the file does not.
	saved  time.Time
	writes int
	dirty  bool
}

// renewalSavePeriod bounds how often renewals alone rewrite the file:
// with many instances heartbeating, a save (and fsync) per heartbeat
// would be most of the disk's work. A renewal not saved costs at most
// this much of the lease's resumed time after a crash (a lease resumes
// with the time it had left at the last save); any change of a set is
// saved at once.
const renewalSavePeriod = time.Second

// fileDoc is the file's content.
type fileDoc struct {
	// SavedAt: each lease resumes, after a restart, with the time it had
	// left at this save (the instance could not renew while canaryd was
	// down).
	SavedAt       time.Time      `json:"saved_at"`
	Registrations []Registration `json:"registrations"`
}

// OpenFile reads path (none yet is an empty set) and returns the store
// and the registrations it held, their leases resumed from now.
func OpenFile(path string, now func() time.Time) (*File, []Registration, error) {
	if now == nil {
		now = time.Now
	}
	f := &File{path: path, now: now, regs: map[Key]Registration{}}
	data, err := os.ReadFile(path)
	switch {
	case os.IsNotExist(err):
		return f, nil, nil
	case err != nil:
		return nil, nil, fmt.Errorf("registrations: %w", err)
	}
	var doc fileDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("registrations file %s is not valid JSON (%v); move it aside to start with no registrations", path, err)
	}
	t := now()
	var out []Registration
	for _, g := range doc.Registrations {
		if !g.Expires.IsZero() {
			left := g.Expires.Sub(doc.SavedAt)
			if left <= 0 {
				continue // expired before the process stopped
			}
			g.Expires = t.Add(left)
		}
		f.regs[g.key()] = g
		out = append(out, g)
	}
	return f, out, nil
}

// Write applies a change and saves the file; on error the file and the
// store's copy are as they were.
func (f *File) Write(put []Registration, del []Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if len(del) == 0 && now.Sub(f.saved) < renewalSavePeriod && f.renewalsLocked(put) {
		for _, g := range put {
			f.regs[g.key()] = g
		}
		f.dirty = f.dirty || len(put) > 0
		return nil
	}
	next := make(map[Key]Registration, len(f.regs)+len(put))
	for k, g := range f.regs {
		next[k] = g
	}
	for _, k := range del {
		delete(next, k)
	}
	for _, g := range put {
		next[g.key()] = g
	}
	return f.saveLocked(next, now)
}

// saveLocked writes regs as the file's content. f.mu held.
func (f *File) saveLocked(regs map[Key]Registration, now time.Time) error {
	doc := fileDoc{SavedAt: now, Registrations: make([]Registration, 0, len(regs))}
	for _, g := range regs {
		doc.Registrations = append(doc.Registrations, g)
	}
	sort.Slice(doc.Registrations, func(i, j int) bool {
		a, b := doc.Registrations[i], doc.Registrations[j]
		if a.Route != b.Route {
			return a.Route < b.Route
		}
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		return a.Addr < b.Addr
	})
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(f.path, data); err != nil {
		return err
	}
	f.regs, f.saved, f.dirty = regs, now, false
	f.writes++
	return nil
}

// sameLocked reports whether all is exactly what regs holds. f.mu held.
func (f *File) sameLocked(all []Registration) bool {
	for _, g := range all {
		if old, ok := f.regs[g.key()]; !ok || old != g {
			return false
		}
	}
	return true
}

// renewalsLocked reports whether every put renews a registration as it
// is (same address, version and TTL). f.mu held.
func (f *File) renewalsLocked(put []Registration) bool {
	for _, g := range put {
		old, ok := f.regs[g.key()]
		if !ok || old.Addr != g.Addr || old.Version != g.Version || old.TTL != g.TTL {
			return false
		}
	}
	return true
}

// SaveAll makes the file hold exactly all (registry.Cache: a cluster
// member's copy of etcd's set). A set that differs only by renewals is
// saved at most once a second, like Write's renewals.
func (f *File) SaveAll(all []Registration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := make(map[Key]Registration, len(all))
	for _, g := range all {
		next[g.key()] = g
	}
	now := f.now()
	switch {
	case len(next) == len(f.regs) && f.sameLocked(all):
		return nil // nothing to write (a member with no registrations writes no file)
	case len(next) == len(f.regs) && now.Sub(f.saved) < renewalSavePeriod && f.renewalsLocked(all):
		f.regs, f.dirty = next, true
		return nil
	}
	return f.saveLocked(next, now)
}

// Flush saves the renewals not saved yet, if any (at a clean stop).
func (f *File) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.dirty {
		return nil
	}
	return f.saveLocked(f.regs, f.now())
}

func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w (set state_dir to a writable directory)", filepath.Dir(path), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".instances-*.json")
	if err != nil {
		return fmt.Errorf("write %s: %w (set state_dir to a writable directory)", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
