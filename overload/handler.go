package overload

import (
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
)

// HandlerOptions configure NewHandler.
type HandlerOptions struct {
	// Max is how many requests may be served at once; MaxPerClient how
	// many for one client. Both above 0.
	Max, MaxPerClient int
	// Trusted are the proxies whose X-Forwarded-For names the client.
	// Default none: the client is the connection's peer.
	Trusted []netip.Prefix
	// Refused is told of each request refused. nil: none.
	Refused Refused
}

// Handler answers 503 to the requests over its limits and serves the
// others with next. A request counts until next returns: a WebSocket or a
// stream counts as long as it is open, as it holds an upstream connection
// as long.
type Handler struct {
	next     http.Handler
	o        HandlerOptions
	inFlight atomic.Int64
	clients  *counts
}

// NewHandler limits next's requests.
func NewHandler(next http.Handler, o HandlerOptions) *Handler {
	return &Handler{next: next, o: o, clients: newCounts()}
}

// InFlight is how many requests are being served now.
func (h *Handler) InFlight() int { return int(h.inFlight.Load()) }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.inFlight.Add(1) > int64(h.o.Max) {
		h.inFlight.Add(-1)
		h.refuse(w, MaxRequestsInFlight, netip.Addr{})
		return
	}
	defer h.inFlight.Add(-1)
	client := ClientOf(r.RemoteAddr, r.Header, h.o.Trusted)
	if !h.clients.acquire(client, int32(h.o.MaxPerClient)) {
		h.refuse(w, MaxRequestsInFlightPerClient, client)
		return
	}
	defer h.clients.release(client)
	h.next.ServeHTTP(w, r)
}

// refuse answers 503 with Retry-After, and keeps the connection: closing
// it would only make the client open another.
func (h *Handler) refuse(w http.ResponseWriter, lim Limit, client netip.Addr) {
	if h.o.Refused != nil {
		h.o.Refused(lim, client)
	}
	hd := w.Header()
	hd.Set("Retry-After", "1")
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusServiceUnavailable)
	w.Write([]byte("canaryd: overloaded (" + string(lim) + "); retry later\n"))
}

// ClientOf is the client a request counts against: the connection's peer
// (the PROXY header's address when that is on), or, when the peer is a
// trusted proxy, the nearest address in X-Forwarded-For that is not one
// (the one canaryd itself passes on as the client). The zero Addr for a
// peer with no IP (a test's pipe): they all count as one client.
func ClientOf(remoteAddr string, h http.Header, trusted []netip.Prefix) netip.Addr {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	peer := ap.Addr().Unmap()
	if len(trusted) == 0 || !contains(trusted, peer) {
		return peer
	}
	xff := h["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for v != "" {
			j := strings.LastIndexByte(v, ',')
			item := strings.TrimSpace(v[j+1:])
			v = v[:max(j, 0)]
			a, err := netip.ParseAddr(item)
			if err != nil {
				return peer // a forged or broken list: count the proxy itself
			}
			if a = a.Unmap(); !contains(trusted, a) {
				return a
			}
		}
	}
	return peer
}

func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
