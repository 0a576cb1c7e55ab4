package grpccode

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Code
		ok   bool
	}{
		{"UNAVAILABLE", Unavailable, true}, {"unavailable", Unavailable, true}, {" 14 ", Unavailable, true},
		{"CANCELED", Canceled, true}, {"CANCELLED", Canceled, true}, {"0", OK, true}, {"16", Unauthenticated, true},
		{"17", 0, false}, {"-1", 0, false}, {"", 0, false}, {"NOPE", 0, false},
	} {
		got, err := Parse(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestFromHeaderAndSet(t *testing.T) {
	if c, ok := FromHeader("14"); !ok || c != Unavailable || c.String() != "UNAVAILABLE" {
		t.Fatalf("FromHeader(14) = %v %v", c, ok)
	}
	for _, bad := range []string{"", "x", "17", "-3", "1e1"} {
		if c, ok := FromHeader(bad); ok || c != Unknown {
			t.Errorf("FromHeader(%q) = %v %v, want UNKNOWN false", bad, c, ok)
		}
	}
	for c := Code(0); c < Count; c++ {
		want := c == Unknown || c == DeadlineExceeded || c == Unimplemented || c == Internal || c == Unavailable || c == DataLoss
		if DefaultErrors.Has(c) != want {
			t.Errorf("DefaultErrors.Has(%v) = %v", c, !want)
		}
	}
	if Of(NotFound).Has(Count) || Code(40).String() != "UNKNOWN" {
		t.Error("out-of-range code")
	}
	if Unavailable.HTTPStatus() != 503 || DeadlineExceeded.HTTPStatus() != 504 || Internal.HTTPStatus() != 500 {
		t.Error("HTTPStatus mapping")
	}
}
