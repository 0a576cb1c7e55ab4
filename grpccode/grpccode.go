// Package grpccode names gRPC status codes (the grpc-status trailer) and
// holds sets of them. It is a leaf: config parses the error set into a Set,
// the proxy tests answers against it, metrics labels by Name.
package grpccode

import (
	"fmt"
	"strconv"
	"strings"
)

// Code is a gRPC status code, 0 (OK) to 16 (UNAUTHENTICATED).
type Code uint8

// The codes of https://grpc.github.io/grpc/core/md_doc_statuscodes.html.
const (
	OK Code = iota
	Canceled
	Unknown
	InvalidArgument
	DeadlineExceeded
	NotFound
	AlreadyExists
	PermissionDenied
	ResourceExhausted
	FailedPrecondition
	Aborted
	OutOfRange
	Unimplemented
	Internal
	Unavailable
	DataLoss
	Unauthenticated
	// Count is the number of codes; a grpc-status outside 0..16 (or none
	// at all) is read as Unknown, as gRPC clients do.
	Count = 17
)

var names = [Count]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
}

// String is the code's canonical name ("UNAVAILABLE"), a bounded metric label.
func (c Code) String() string {
	if int(c) < Count {
		return names[c]
	}
	return "UNKNOWN"
}

// FromHeader reads a grpc-status value; ok is false when it is not a
// number from 0 to 16.
func FromHeader(v string) (c Code, ok bool) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n >= Count {
		return Unknown, false
	}
	return Code(n), true
}

// Parse reads a code by name (any case, "CANCELED" too) or number.
func Parse(s string) (Code, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	if t == "CANCELED" {
		return Canceled, nil
	}
	for i, n := range names {
		if n == t {
			return Code(i), nil
		}
	}
	if n, err := strconv.Atoi(t); err == nil && n >= 0 && n < Count {
		return Code(n), nil
	}
	return 0, fmt.Errorf("%q is not a gRPC status code; use a name such as UNAVAILABLE or a number from 0 to 16", s)
}

// Set is a set of codes.
type Set uint32

// Of makes a set.
func Of(codes ...Code) Set {
	var s Set
	for _, c := range codes {
		s |= 1 << c
	}
	return s
}

// Has reports whether c is in the set.
func (s Set) Has(c Code) bool { return c < Count && s&(1<<c) != 0 }

// DefaultErrors is the error set a gRPC answer is judged by unless the
// config says otherwise: the codes that mean the server failed, not that
// the client asked for something wrong (NOT_FOUND, INVALID_ARGUMENT...).
var DefaultErrors = Of(Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss)

// HTTPStatus is the status a failed call counts as in canaryd's own
// accounting (windows, passive health), as Envoy's outlier detection maps
// them: UNAVAILABLE is a 503, DEADLINE_EXCEEDED a 504 (both gateway
// failures), UNIMPLEMENTED a 501, the rest 500.
func (c Code) HTTPStatus() int {
	switch c {
	case Unavailable:
		return 503
	case DeadlineExceeded:
		return 504
	case Unimplemented:
		return 501
	}
	return 500
}
