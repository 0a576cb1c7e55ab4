package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

func TestPairedRatio(t *testing.T) {
	rps := func(vs ...float64) []run {
		var rs []run
		for _, v := range vs {
			rs = append(rs, run{rps: v})
		}
		return rs
	}
	for _, tc := range []struct {
		name string
		a, b []run
		want string
	}{
		{"drift cancels within a round", rps(200, 100, 400), rps(100, 50, 200), "2.00× (2.00–2.00× over 3 rounds)"},
		{"median of the round ratios", rps(300, 100, 160), rps(100, 100, 80), "2.00× (1.00–3.00× over 3 rounds)"},
		{"even count averages the middle two", rps(100, 300), rps(100, 100), "2.00× (1.00–3.00× over 2 rounds)"},
		{"a round without b is skipped", rps(100, 100), rps(0, 50), "2.00× (2.00–2.00× over 1 rounds)"},
		{"unequal counts pair the first rounds", rps(100, 100, 100), rps(50), "2.00× (2.00–2.00× over 1 rounds)"},
		{"nothing to pair", rps(100), nil, "–"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pairedRatio(tc.a, tc.b); got != tc.want {
				t.Errorf("pairedRatio = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTLSTable(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/tls.tsv"
	data := "target\tmode\tround\trps\tp99_ms\trequests\tcpu_ticks\n" +
		"canaryd\ttls-keepalive\t1\t20000\t10.0ms\t200000\t400\n" +
		"httputil\ttls-keepalive\t1\t8000\t40.0ms\t80000\t700\n" +
		"nginx\ttls-keepalive\t1\t32000\t15.0ms\t320000\t640\n" +
		"canaryd\th2\t1\t16000\t\t160000\t800\n" +
		"nginx\th2\t1\t40000\t\t400000\t600\n" +
		"canaryd\ttls-handshake\t1\t2500\t6ms\t25000\t800\n" +
		"nginx\ttls-handshake\t1\t2300\t4ms\t23000\t900\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	r, w, _ := os.Pipe()
	stdout := os.Stdout
	os.Stdout = w
	err := tlsTable(path, 100)
	w.Close()
	os.Stdout = stdout
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	for _, want := range []string{
		"canaryd 2.50× the httputil baseline (target ≥ 2.00×) and 0.62× nginx",
		"over HTTP/2 0.40× nginx",
		"full handshakes: canaryd 2500/s, nginx 2300/s",
		"| canaryd | 20000 | 10.00 | 2.50× | 0.62× | 20.0 |",
		"| canaryd | 16000 | – | – | 0.40× | 50.0 |",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
