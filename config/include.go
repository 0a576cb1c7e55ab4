package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxIncludeGlobs bounds include's globs, and MaxIncludedFiles the files
// they may name together.
const (
	MaxIncludeGlobs  = 64
	MaxIncludedFiles = 10000
)

// includes checks the include globs: valid patterns, a wildcard in the
// file name only (the directory is watched, so it must be one).
func (v *validator) includes(c *Config) {
	if len(c.Include) > MaxIncludeGlobs {
		v.add(path{"include"}, "%d globs; at most %d (a directory's files are one glob: routes.d/*.yaml)", len(c.Include), MaxIncludeGlobs)
	}
	for i, g := range c.Include {
		switch {
		case strings.TrimSpace(g) == "":
			v.add(path{"include", i}, "an empty glob; name files such as routes.d/*.yaml")
		case strings.ContainsAny(filepath.Dir(g), "*?["):
			v.add(path{"include", i}, "%q has a wildcard in its directory; only the file name may have one (routes.d/*.yaml)", g)
		default:
			if _, err := filepath.Match(filepath.Base(g), ""); err != nil {
				v.add(path{"include", i}, "%q is not a valid glob: %v", g, err)
			}
		}
	}
}

// IncludedFile is one file an include glob names: its routes, as last
// read and found valid.
type IncludedFile struct {
	// Path as the glob expanded it (relative to the working directory
	// when the main file's path is).
	Path   string
	Hash   string
	Routes []Route
	// lines are each route's line in the file (for problems that name
	// two files).
	lines []int
}

// routesFile is what an included file may hold: routes only.
type routesFile struct {
	Routes []Route `yaml:"routes"`
}

// ParseRoutes decodes, defaults and validates an included file's routes,
// in the context of the main file's config top (trusted_proxies, for
// force.allow_from). The error, if any, is an *Error naming the file.
func ParseRoutes(name string, data []byte, top *Config) (*IncludedFile, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &Error{File: name, Problems: []Problem{syntaxProblem(err, data)}}
	}
	f := &IncludedFile{Path: name, Hash: hashOf(data)}
	if root.Kind == 0 || len(root.Content) == 0 {
		return f, nil // an empty file: no routes (yet)
	}
	var rf routesFile
	typeProblems, err := decodeStrict(name, data, &rf)
	if err != nil {
		return nil, err
	}
	for i := range rf.Routes {
		rf.Routes[i].applyDefaults()
	}
	v := validator{root: root.Content[0], trusted: top.trusted}
	v.routes(rf.Routes)
	if ps := append(typeProblems, v.problems...); len(ps) > 0 {
		sortProblems(ps)
		return nil, &Error{File: name, Problems: ps}
	}
	f.Routes = rf.Routes
	for i := range f.Routes {
		f.lines = append(f.lines, v.line(path{"routes", i}))
	}
	return f, nil
}

func hashOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// expand lists the files the include globs name, relative to the main
// file's directory: each glob's matches in name order, a file named by
// two globs once. A glob whose directory is missing is an error (it could
// not be watched); one that matches nothing is not (an empty routes.d).
func expand(mainPath string, globs []string) ([]string, error) {
	base := filepath.Dir(mainPath)
	var out []string
	seen := map[string]bool{}
	for _, g := range globs {
		pat := g
		if !filepath.IsAbs(pat) {
			pat = filepath.Join(base, pat)
		}
		if st, err := os.Stat(filepath.Dir(pat)); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("include %q: directory %s does not exist; create it, or fix the glob", g, filepath.Dir(pat))
		}
		matches, err := filepath.Glob(pat)
		if err != nil {
			return nil, fmt.Errorf("include %q: %w", g, err)
		}
		sort.Strings(matches)
		for _, m := range matches {
			if st, err := os.Stat(m); err != nil || st.IsDir() || seen[m] {
				continue
			}
			seen[m] = true
			out = append(out, m)
		}
	}
	if len(out) > MaxIncludedFiles {
		return nil, fmt.Errorf("include names %d files; at most %d", len(out), MaxIncludedFiles)
	}
	return out, nil
}

// IncludePatterns are the include globs as paths (relative to the main
// file's directory), for a watch.
func IncludePatterns(mainPath string, c *Config) []string {
	var out []string
	for _, g := range c.Include {
		if !filepath.IsAbs(g) {
			g = filepath.Join(filepath.Dir(mainPath), g)
		}
		out = append(out, g)
	}
	return out
}

// Set is a main config file and the files its include globs name, each
// read, parsed and found valid on its own: an edit of one included file
// parses that file only, and a bad one keeps its last good version while
// the others apply. The main file stays whole or nothing. A Set is used
// by one goroutine at a time (the reload loop).
type Set struct {
	mainPath string
	mainHash string
	main     *Config
	// files are the included files' last good versions, in order.
	files []*IncludedFile
}

// FileResult is one included file's outcome in a reload.
type FileResult struct {
	Path string
	// Err: the file was not applied (its last good version serves, if it
	// had one); nil: applied or unchanged.
	Err error
}

// Update is a Set's reload: what to apply.
type Update struct {
	// Config is the main file with every file's routes, in file order.
	Config *Config
	// Hash identifies the whole set as applied (the main file's hash
	// when there are no included files).
	Hash string
	// MainData is the main file as read.
	MainData []byte
	// Changed names the routes of the included files that changed; with
	// Full false, every other route is what it was (the same values).
	Changed []string
	// Full: the main file changed, or routes came, went or moved
	// between files: apply the whole config.
	Full bool
	// Files are the included files' outcomes, one each; Err joins the
	// failures (the rest was applied).
	Files []FileResult
	Err   error

	// The set's state once this update is applied (Set.Commit).
	mainHash string
	main     *Config
	files    []*IncludedFile
}

// LoadSet reads and validates the main file and every file it includes:
// each must be valid (a start, `canaryd validate`).
func LoadSet(mainPath string) (*Set, *Update, error) {
	s := &Set{mainPath: mainPath}
	u, err := s.Reload(true)
	if err != nil {
		return nil, nil, err
	}
	if u.Err != nil {
		return nil, nil, u.Err
	}
	s.Commit(u)
	return s, u, nil
}

// NewSet is a set of which nothing is read yet: the first Reload reads
// and parses every file.
func NewSet(mainPath string) *Set { return &Set{mainPath: mainPath} }

// Hash identifies the set as last committed.
func (s *Set) Hash() string { return hashSet(s.mainHash, s.main, s.files) }

// hashSet is the main file's hash when it includes nothing, else a hash
// of it and of each included file's path and content.
func hashSet(mainHash string, main *Config, files []*IncludedFile) string {
	if main == nil || len(main.Include) == 0 {
		return mainHash
	}
	h := sha256.New()
	h.Write([]byte(mainHash))
	for _, f := range files {
		fmt.Fprintf(h, "\x00%s\x00%s", f.Path, f.Hash)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Files are the included files' paths, as last committed.
func (s *Set) Files() []string {
	out := make([]string, len(s.files))
	for i, f := range s.files {
		out[i] = f.Path
	}
	return out
}

// Reload reads the set again, parsing only the files whose content
// changed (every file with all: the secret files they name may have, for
// SIGHUP and the admin API's reload). An error means the main file could
// not be read or is invalid: nothing applies. Otherwise Update says what
// to apply; failures of included files are in Update.Err and Files. The
// set takes the update as its state once it is applied (Commit).
func (s *Set) Reload(all bool) (*Update, error) {
	data, err := readConfig(s.mainPath)
	if err != nil {
		return nil, err
	}
	mainHash := hashOf(data)
	main := s.main
	full := mainHash != s.mainHash || main == nil || all
	if full {
		if main, err = Parse(s.mainPath, data); err != nil {
			return nil, err
		}
	}
	paths, err := expand(s.mainPath, main.Include)
	if err != nil {
		return nil, &Error{File: s.mainPath, Problems: []Problem{{Path: "include", Msg: err.Error()}}}
	}
	old := map[string]*IncludedFile{}
	for _, f := range s.files {
		old[f.Path] = f
	}
	u := &Update{MainData: data, Full: full}
	files := make([]*IncludedFile, 0, len(paths))
	var errs []error
	for _, p := range paths {
		prev := old[p]
		if all {
			prev = nil
		}
		f, err := readIncluded(p, prev, old[p], main)
		if err != nil {
			errs = append(errs, err)
			u.Files = append(u.Files, FileResult{Path: p, Err: err})
			if prev := old[p]; prev != nil {
				files = append(files, prev) // its last good version serves
			}
			continue
		}
		u.Files = append(u.Files, FileResult{Path: p})
		if f != prev {
			for _, r := range f.Routes {
				u.Changed = append(u.Changed, r.Name)
			}
			if prev != nil {
				for _, r := range prev.Routes {
					u.Changed = append(u.Changed, r.Name)
				}
			}
		}
		files = append(files, f)
	}
	// Names and matches must be unique across the files: a clash is the
	// fault of a file that changed (kept at its last good version). The
	// same names and matches in the same files as the set last applied
	// cannot clash: that set did not.
	layout := !full && sameLayout(s.files, files)
	var clashErrs []error
	if !layout {
		files, clashErrs = dedupe(main, files, old, u)
	}
	kept := make(map[string]bool, len(files))
	for _, f := range files {
		kept[f.Path] = true
	}
	for _, f := range s.files {
		if !kept[f.Path] {
			for _, r := range f.Routes { // a file gone, or left out
				u.Changed = append(u.Changed, r.Name)
			}
		}
	}
	errs = append(errs, clashErrs...)
	cfg := assemble(main, files)
	if len(cfg.Routes) == 0 {
		if len(errs) > 0 {
			return nil, errors.Join(errs...) // why the included routes are missing
		}
		return nil, &Error{File: s.mainPath, Problems: []Problem{{Path: "routes", Msg: "no routes in this file or the files it includes; add at least one route with pools"}}}
	}
	// The structure changed (routes came, went or moved): apply whole.
	if !layout {
		u.Full = true
	}
	u.mainHash, u.main, u.files = mainHash, main, files
	u.Config, u.Hash, u.Err = cfg, hashSet(mainHash, main, files), errors.Join(errs...)
	slices.Sort(u.Changed)
	u.Changed = slices.Compact(u.Changed)
	return u, nil
}

// Commit makes an applied update the set's state: the next Reload
// compares with it.
func (s *Set) Commit(u *Update) {
	s.mainHash, s.main, s.files = u.mainHash, u.main, u.files
}

// readConfig reads a config file, refusing one over maxFileSize (a
// wrong path: a log, a binary) before reading it.
func readConfig(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w (check --config)", path, err)
	}
	if st.Size() > maxFileSize {
		return nil, fmt.Errorf("config %s: larger than %d bytes; is this the right file?", path, maxFileSize)
	}
	data, err := os.ReadFile(path) // one allocation, sized by its own stat
	if err != nil {
		return nil, fmt.Errorf("config %s: read: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("config %s: larger than %d bytes; is this the right file?", path, maxFileSize)
	}
	return data, nil
}

// readIncluded reads an included file; prev (its last good version) is
// returned as is when the content did not change, and the file is parsed
// only when it did. last is the version last applied, even when a full
// reload passes no prev: a file that had routes and is now empty is
// refused (its routes stay), because that is what a file caught between
// an editor's truncation and its write looks like (os.WriteFile, `>`
// in a shell); removing them takes `routes: []` or removing the file.
func readIncluded(path string, prev, last *IncludedFile, top *Config) (*IncludedFile, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	if prev != nil && prev.Hash == hashOf(data) {
		return prev, nil
	}
	if last != nil && len(last.Routes) > 0 && len(bytes.TrimSpace(data)) == 0 {
		return nil, &Error{File: path, Problems: []Problem{{Msg: fmt.Sprintf(
			"the file is empty and held %d routes, which stay as they were (a file read while being written?); to remove them, write \"routes: []\" or remove the file", len(last.Routes))}}}
	}
	return ParseRoutes(path, data, top)
}

// dedupe drops, from the files that changed, the versions whose routes
// clash with another file's (or the main file's) by name or by match,
// keeping their last good version instead; a new file that clashes is
// left out. It returns the files to use and the problems, each naming
// both places.
func dedupe(main *Config, files []*IncludedFile, old map[string]*IncludedFile, u *Update) ([]*IncludedFile, []error) {
	var errs []error
	for {
		type place struct {
			file string
			line int
		}
		names, matches := map[string]place{}, map[string]place{}
		for _, r := range main.Routes {
			names[r.Name] = place{"main", 0}
			matches[matchKey(r)] = place{"main", 0}
		}
		clash := -1
		var msg string
		for i, f := range files {
			for k, r := range f.Routes {
				if p, dup := names[r.Name]; dup && clash < 0 {
					clash, msg = i, fmt.Sprintf("line %d: route %q is already defined in %s", f.lines[k], r.Name, where(p.file, p.line))
				} else if p, dup := matches[matchKey(r)]; dup && clash < 0 {
					clash, msg = i, fmt.Sprintf("line %d: route %q has the same host %q and path_prefix %q as a route in %s; one of them could never match",
						f.lines[k], r.Name, r.Match.Host, r.Match.PathPrefix, where(p.file, p.line))
				}
				names[r.Name] = place{f.Path, f.lines[k]}
				matches[matchKey(r)] = place{f.Path, f.lines[k]}
			}
		}
		if clash < 0 {
			return files, errs
		}
		// Blame the file that changed: the clashing one if it did, else
		// the one it clashed with is older and stays.
		f := files[clash]
		err := &Error{File: f.Path, Problems: []Problem{{Msg: msg + "; rename one of them"}}}
		errs = append(errs, err)
		for k := range u.Files {
			if u.Files[k].Path == f.Path {
				u.Files[k].Err = err
			}
		}
		if prev := old[f.Path]; prev != nil && prev != f {
			files[clash] = prev
		} else {
			files = slices.Delete(files, clash, clash+1)
		}
	}
}

func where(file string, line int) string {
	if file == "main" {
		return "the main config file"
	}
	return fmt.Sprintf("%s:%d", file, line)
}

func matchKey(r Route) string { return strings.ToLower(r.Match.Host) + " " + r.Match.PathPrefix }

// assemble is main with the files' routes after its own, in file order.
func assemble(main *Config, files []*IncludedFile) *Config {
	if len(files) == 0 {
		return main
	}
	c := *main
	n := len(main.Routes)
	for _, f := range files {
		n += len(f.Routes)
	}
	c.Routes = make([]Route, 0, n)
	c.Routes = append(c.Routes, main.Routes...)
	for _, f := range files {
		c.Routes = append(c.Routes, f.Routes...)
	}
	return &c
}

// sameLayout reports whether two versions of the included files hold the
// same routes, by name and match, in the same files and order (what the
// routing table's index rests on): only the files that changed are
// compared route by route.
func sameLayout(a, b []*IncludedFile) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] == b[i] {
			continue
		}
		if a[i].Path != b[i].Path || len(a[i].Routes) != len(b[i].Routes) {
			return false
		}
		for k := range a[i].Routes {
			if a[i].Routes[k].Name != b[i].Routes[k].Name || matchKey(a[i].Routes[k]) != matchKey(b[i].Routes[k]) {
				return false
			}
		}
	}
	return true
}
