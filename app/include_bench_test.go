package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"canaryd/config"
	"canaryd/metrics"
)

// An edit of one included file at 10,000 routes in 100 files: read to
// applied (the reload's own time; bench/scale measures save to served
// with the process around it).
func BenchmarkIncludedFileEdit(b *testing.B) {
	dir := b.TempDir()
	rd := filepath.Join(dir, "routes.d")
	os.MkdirAll(rd, 0o755)
	const files, per = 100, 100
	file := func(f, green int) string {
		var s strings.Builder
		s.WriteString("routes:\n")
		for i := f * per; i < (f+1)*per; i++ {
			g := 10
			if i == f*per {
				g = green
			}
			fmt.Fprintf(&s, "  - name: r%d\n    match: { host: svc-%d.example }\n    pools:\n      - { name: blue, weight: %d, instances: [\"127.0.%d.%d:9001\", \"127.0.%d.%d:9002\"] }\n      - { name: green, weight: %d, instances: [\"127.1.%d.%d:9001\"] }\n",
				i, i, 100-g, i/250, i%250, i/250, i%250, g, i/250, i%250)
		}
		return s.String()
	}
	for f := range files {
		os.WriteFile(filepath.Join(rd, fmt.Sprintf("f%03d.yaml", f)), []byte(file(f, 10)), 0o644)
	}
	main := filepath.Join(dir, "config.yaml")
	os.WriteFile(main, []byte("listen: \"127.0.0.1:0\"\nadmin: { listen: \"off\" }\nstate_dir: "+filepath.Join(dir, "state")+"\ninclude: [\"routes.d/*.yaml\"]\n"), 0o644)
	set, u, err := config.LoadSet(main)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(u.Config, Options{ConfigPath: main, ConfigData: u.MainData, ConfigSet: set, Registry: metrics.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.pipe.closeIdle()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		os.WriteFile(filepath.Join(rd, "f050.yaml"), []byte(file(50, 10+i%2*40)), 0o644)
		if res := srv.reloadOnce("bench"); res.Result != metrics.ReloadApplied {
			b.Fatalf("%s: %v", res.Result, res.Err)
		}
	}
}
