// Package memlimit gives the Go runtime a soft memory limit from the
// memory limit of the cgroup the process runs in (a container's, or a
// systemd unit's MemoryMax), so that the garbage collector works harder
// before the kernel's OOM killer acts. GOMEMLIMIT, when set, wins. It also
// keeps the heap goal from falling under a floor (Floor), so that a small
// heap is not collected many times a second.
package memlimit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// Share is the part of the cgroup's limit given to the Go heap and
// runtime: the rest is for what the runtime does not count (thread stacks
// of cgo, the kernel's socket buffers charged to the cgroup, page cache).
const Share = 0.9

// Limit is the lowest memory limit on the cgroup described by
// procSelfCgroup (the content of /proc/self/cgroup) and its ancestors,
// read under root (/sys/fs/cgroup): cgroup v2's memory.max, else v1's
// memory.limit_in_bytes. 0 when there is none; file names the file that
// set it.
func Limit(root string, procSelfCgroup []byte) (limit int64, file string, err error) {
	var candidates []string // directories to look in, the process's own first
	sc := bufio.NewScanner(bytes.NewReader(procSelfCgroup))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		controllers, p := parts[1], parts[2]
		switch {
		case parts[0] == "0" && controllers == "":
			// v2: the unified hierarchy, at root (pure v2) or
			// root/unified (hybrid).
			for _, base := range []string{root, filepath.Join(root, "unified")} {
				candidates = append(candidates, ancestors(base, p, "memory.max")...)
			}
		case hasController(controllers, "memory"):
			candidates = append(candidates, ancestors(filepath.Join(root, "memory"), p, "memory.limit_in_bytes")...)
		}
	}
	for _, f := range candidates {
		b, rerr := os.ReadFile(f)
		if rerr != nil {
			if !errors.Is(rerr, os.ErrNotExist) {
				err = rerr
			}
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			continue
		}
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil {
			return 0, "", fmt.Errorf("%s: %q is not a number of bytes", f, v)
		}
		if n <= 0 || n >= 1<<62 { // v1 writes "no limit" as a huge page-aligned number
			continue
		}
		if limit == 0 || n < limit {
			limit, file = n, f
		}
	}
	return limit, file, err
}

// ancestors lists file in the cgroup directory p under base and in each
// of its parents up to base.
func ancestors(base, p, file string) []string {
	var out []string
	for p = path.Clean("/" + p); ; p = path.Dir(p) {
		out = append(out, filepath.Join(base, p, file))
		if p == "/" {
			return out
		}
	}
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// Applied is what Apply did.
type Applied struct {
	// Limit is the soft limit in force (bytes); 0: none.
	Limit int64
	// Source is "GOMEMLIMIT", the cgroup file it came from, or "" for none.
	Source string
	// CgroupLimit is the cgroup's limit, when one was found.
	CgroupLimit int64
}

// Apply sets the runtime's soft memory limit to Share of the cgroup's
// limit, unless GOMEMLIMIT is set (the runtime has applied it already;
// "off" is a choice too) or there is no limit.
func Apply() (Applied, error) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		return Applied{Limit: debug.SetMemoryLimit(-1), Source: "GOMEMLIMIT"}, nil
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return Applied{}, nil // not Linux, or no /proc: nothing to follow
	}
	limit, file, err := Limit("/sys/fs/cgroup", self)
	if limit == 0 {
		return Applied{}, err
	}
	soft := int64(float64(limit) * Share)
	debug.SetMemoryLimit(soft)
	return Applied{Limit: soft, Source: file, CgroupLimit: limit}, err
}
