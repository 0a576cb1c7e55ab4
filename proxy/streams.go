package proxy

import (
	"context"
	"net/http"
	"strings"
	"sync"
)

// Streams keeps the long-lived requests in flight (WebSockets, server-sent
// events, gRPC calls), by route and pool, so that a rollback can end those
// a canary still serves (rollout.rollback.close_streams_after). Only the
// routes whose rollout closes streams are looked at (balancer.Route's
// TrackStreams, set at reload), and there plain requests are not kept:
// they end by themselves, and keeping them would put a lock on every
// request. A request is a stream by its headers: an
// Upgrade, a gRPC content type, or Accept: text/event-stream (what
// EventSource sends).
type Streams struct {
	mu sync.Mutex
	m  map[streamKey]map[*stream]struct{}
}

type streamKey struct{ route, pool string }

type stream struct {
	key    streamKey
	cancel context.CancelFunc
}

// NewStreams returns an empty registry.
func NewStreams() *Streams { return &Streams{m: map[streamKey]map[*stream]struct{}{}} }

// isStream: the request is one a rollback may have to end.
func isStream(r *http.Request) bool {
	if r.Header["Upgrade"] != nil || isGRPC(r.Header) {
		return true
	}
	for _, a := range r.Header["Accept"] {
		if strings.Contains(a, "text/event-stream") {
			return true
		}
	}
	return false
}

func (s *Streams) add(route, pool string, cancel context.CancelFunc) *stream {
	st := &stream{key: streamKey{route, pool}, cancel: cancel}
	s.mu.Lock()
	set := s.m[st.key]
	if set == nil {
		set = map[*stream]struct{}{}
		s.m[st.key] = set
	}
	set[st] = struct{}{}
	s.mu.Unlock()
	return st
}

func (s *Streams) remove(st *stream) {
	s.mu.Lock()
	if set := s.m[st.key]; set != nil {
		delete(set, st)
		if len(set) == 0 {
			delete(s.m, st.key)
		}
	}
	s.mu.Unlock()
}

// CloseStreams ends every stream a route's pool serves now and returns
// how many: the upstream request is cancelled, so ReverseProxy ends the
// client's side as for an instance that broke off: an HTTP/1.1 connection
// (and a WebSocket's hijacked one) closes, an HTTP/2 stream is reset.
// (Go's server cannot send GOAWAY on one connection, and one client
// connection may carry streams to both pools.)
func (s *Streams) CloseStreams(route, pool string) int {
	s.mu.Lock()
	set := s.m[streamKey{route, pool}]
	delete(s.m, streamKey{route, pool})
	s.mu.Unlock()
	for st := range set {
		st.cancel()
	}
	return len(set)
}

// Open counts the streams a route's pool serves now.
func (s *Streams) Open(route, pool string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m[streamKey{route, pool}])
}
