package main

import "testing"

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
