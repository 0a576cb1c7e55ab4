package memlimit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func write(t *testing.T, root, rel, data string) {
	t.Helper()
	f := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The limit is found for cgroup v2 (pure and hybrid) and v1, on the
// process's own group or an ancestor (the lowest wins); "max" and v1's
// huge number are no limit.
func TestLimit(t *testing.T) {
	for _, tc := range []struct {
		name, self string
		files      map[string]string
		want       int64
		wantFile   string
	}{
		{"v2 pure", "0::/system.slice/canaryd.service\n", map[string]string{"system.slice/canaryd.service/memory.max": "536870912\n"}, 512 << 20, "system.slice/canaryd.service/memory.max"},
		{"v2 max", "0::/a\n", map[string]string{"a/memory.max": "max\n"}, 0, ""},
		{"v2 parent lower", "0::/a/b\n", map[string]string{"a/b/memory.max": "max\n", "a/memory.max": "268435456\n"}, 256 << 20, "a/memory.max"},
		{"v2 in a container (namespace root)", "0::/\n", map[string]string{"memory.max": "1073741824\n"}, 1 << 30, "memory.max"},
		{"v2 hybrid", "0::/x\n4:memory:/x\n", map[string]string{"unified/x/memory.max": "200000000\n", "memory/x/memory.limit_in_bytes": "9223372036854771712\n"}, 200000000, "unified/x/memory.max"},
		{"v1", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n", map[string]string{"memory/docker/abc/memory.limit_in_bytes": "104857600\n"}, 100 << 20, "memory/docker/abc/memory.limit_in_bytes"},
		{"v1 no limit", "4:memory:/\n", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, ""},
		{"none", "0::/\n", nil, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for f, d := range tc.files {
				write(t, root, f, d)
			}
			got, file, err := Limit(root, []byte(tc.self))
			if err != nil {
				t.Fatal(err)
			}
			wantFile := ""
			if tc.wantFile != "" {
				wantFile = filepath.Join(root, tc.wantFile)
			}
			if got != tc.want || file != wantFile {
				t.Fatalf("Limit = %d from %q; want %d from %q", got, file, tc.want, wantFile)
			}
		})
	}
	root := t.TempDir()
	write(t, root, "a/memory.max", "lots\n")
	if _, _, err := Limit(root, []byte("0::/a\n")); err == nil || !strings.Contains(err.Error(), "not a number") {
		t.Fatalf("a junk limit: %v", err)
	}
}

// FuzzLimit: any /proc/self/cgroup content, no panic.
func FuzzLimit(f *testing.F) {
	for _, s := range []string{"0::/\n", "4:memory:/docker/abc\n", "0::/a/../../b\n", ":::\n", "12:memory,cpu:\n", ""} {
		f.Add(s)
	}
	root := f.TempDir()
	f.Fuzz(func(t *testing.T, self string) {
		if n, _, _ := Limit(root, []byte(self)); n != 0 {
			t.Fatalf("a limit from an empty tree: %d", n)
		}
	})
}

// In a real memory cgroup made for the test (root, cgroup v1 or v2 with
// the memory controller writable), a child process finds the limit and
// applies Share of it. Skipped where no cgroup can be made.
func TestApplyInARealCgroup(t *testing.T) {
	if os.Getenv("MEMLIMIT_CHILD") != "" {
		a, err := Apply()
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("LIMIT " + strconv.FormatInt(a.Limit, 10) + " " + strconv.FormatInt(a.CgroupLimit, 10) + "\n")
		return
	}
	dir := filepath.Join("/sys/fs/cgroup/memory", "canaryd-memlimit-test-"+strconv.Itoa(os.Getpid()))
	limitFile := "memory.limit_in_bytes"
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		dir, limitFile = filepath.Join("/sys/fs/cgroup", "canaryd-memlimit-test-"+strconv.Itoa(os.Getpid())), "memory.max"
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a cgroup here: %v", err)
	}
	defer os.Remove(dir)
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte("314572800"), 0o644); err != nil {
		t.Skipf("cannot set a memory limit: %v", err)
	}
	// The child joins the cgroup before it runs: a shell writes its own
	// pid into cgroup.procs, then execs the test binary.
	cmd := exec.Command("sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, dir, os.Args[0], "-test.run=^TestApplyInARealCgroup$")
	cmd.Env = append(os.Environ(), "MEMLIMIT_CHILD=1", "GOMEMLIMIT=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("cannot run a process in the cgroup: %v\n%s", err, out)
	}
	want := "LIMIT " + strconv.FormatInt(int64(314572800*Share), 10) + " 314572800"
	if !strings.Contains(string(out), want) {
		t.Fatalf("child said:\n%s\nwant %q", out, want)
	}
}
