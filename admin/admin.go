// Package admin serves canaryd's admin listener: liveness and readiness,
// /metrics, and the admin API under /api/v1/. The rest of the API and the
// dashboard join it in their own issues.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"canaryd/rollout"
)

// ReloadResult is the answer to POST /api/v1/reload.
type ReloadResult struct {
	// Result is "applied", "unchanged" or "failed" (the label of
	// canaryd_config_reloads_total).
	Result string `json:"result"`
	// Hash is the first 16 hex digits of the file's SHA-256, when read.
	Hash string `json:"hash,omitempty"`
	// Error says why a reload failed, one problem a line.
	Error string `json:"error,omitempty"`
}

// Options wires the admin handler. Zero values disable what they serve.
type Options struct {
	// Ready reports whether the proxy takes traffic. Required.
	Ready func() bool
	// Broken names what stopped working for good (a background loop that
	// panicked), "" while all is well: /healthz then answers 503 with it,
	// so that an orchestrator replaces the process. Default nil: healthy.
	Broken func() string
	// Metrics serves /metrics. Default: not served.
	Metrics http.Handler
	// Reload runs one config reload and reports it. Default: the reload
	// endpoint answers 404.
	Reload func(ctx context.Context) ReloadResult
	// Token, when not empty, must come as "Authorization: Bearer <token>"
	// on every mutation. Default "" (no token: keep the admin on loopback).
	Token string
	// Routes serves /api/v1/routes. Default: not served.
	Routes Routes
	// AllowedHosts are host names the API and dashboard answer to besides IP
	// literals and localhost (DNS rebinding defence). Default none.
	AllowedHosts []string
	// Dashboard serves the web UI at /. Default: not served.
	Dashboard http.Handler
	// Instances serves .../pools/{pool}/instances (the registration
	// API). Default: not served.
	Instances Instances
	// Cluster is this member's view of its cluster, for GET
	// /api/v1/cluster. Default nil: a single process (the endpoint says
	// so with 404).
	Cluster func() ClusterView
	// Pprof serves net/http/pprof at /debug/pprof/, behind the token for
	// every method (a profile shows the process's internals). Default
	// false: not served.
	Pprof bool
}

// ClusterView is GET /api/v1/cluster.
type ClusterView struct {
	Name      string `json:"name"`
	Member    string `json:"member"`
	Leader    string `json:"leader"`
	Connected bool   `json:"connected"`
	// Partitioned: cut off from etcd for partition_timeout or more.
	Partitioned bool `json:"partitioned"`
	// States is the sequence of each route's latest state.
	States  map[string]int64    `json:"states"`
	Members []ClusterMemberView `json:"members"`
}

// ClusterMemberView is one live member.
type ClusterMemberView struct {
	ID         string `json:"id"`
	Addr       string `json:"addr"`
	Admin      string `json:"admin"`
	Version    string `json:"version"`
	ConfigHash string `json:"config_hash"`
	// Acked is the state sequence the member serves, by route.
	Acked map[string]int64 `json:"acked"`
}

// Routes is what the routes API reads and steers.
type Routes interface {
	Routes() []RouteView
	// Route is one route's view; false when there is no such route.
	Route(name string) (RouteView, bool)
	// Control runs promote, abort, pause or resume on a route's rollout.
	Control(route string, action rollout.Action) (*rollout.Status, error)
	// Approve gives a person's go-ahead to a route's pending approval
	// gate.
	Approve(route string, a rollout.Approval) (*rollout.Status, error)
	// SetWeights sets a route's weights by hand (percent by pool).
	SetWeights(route string, weights map[string]float64) (WeightsResult, error)
	// Series is a route's recent traffic per pool, for the dashboard.
	Series(route string, last, step time.Duration) (map[string][]Point, error)
}

// ApproveRequest is the body of POST .../approve.
type ApproveRequest struct {
	// Gate names the approval gate; optional when one alone is pending.
	Gate string `json:"gate,omitempty"`
	// By: who approves (recorded as given).
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Source: api (the default), or cli and dashboard, which canaryd's own
	// clients send.
	Source string `json:"source,omitempty"`
}

// WeightsResult is the answer to PUT .../weights.
type WeightsResult struct {
	Route   string             `json:"route"`
	Weights map[string]float64 `json:"weights"`
	// Version counts the route's manual weight changes; the highest one is
	// the weights in force.
	Version int `json:"version"`
}

// Point is one step of a pool's traffic.
type Point struct {
	At         time.Time `json:"at"`
	RPS        float64   `json:"rps"`
	ErrorRate  float64   `json:"error_rate"`
	P99Ms      float64   `json:"p99_ms"`
	HasTraffic bool      `json:"has_traffic"`
}

// Errors Routes returns, and what the API answers for them.
var (
	// ErrUnknownRoute: 404.
	ErrUnknownRoute = errors.New("no such route")
	// ErrConflict wraps a change the route's state refuses: 409.
	ErrConflict = errors.New("conflict")
	// ErrInvalid wraps a request that is wrong in itself: 400.
	ErrInvalid = errors.New("invalid")
	// ErrUnavailable wraps a change the store could not save (nothing
	// changed; try again): 503.
	ErrUnavailable = errors.New("unavailable")
)

// Instances is what the registration API reads and changes.
type Instances interface {
	// Instances lists a pool's instances, whatever their source.
	Instances(route, pool string) (InstancesView, error)
	// Register replaces a registered pool's set (replace) or adds to it
	// (a POST; an instance already there renews its lease). from is the
	// client's address.
	Register(route, pool string, replace bool, req InstancesRequest, from string) (InstancesView, error)
	// Deregister removes one instance (host:port) from a registered pool.
	Deregister(route, pool, addr string) (InstancesView, error)
}

// InstancesRequest is the body of PUT and POST .../instances.
type InstancesRequest struct {
	// Version the instances run ("v2.4.0"). PUT: the pool's version ("":
	// none); POST: "" keeps the pool's, another one is refused unless the
	// pool is empty.
	Version string `json:"version"`
	// Instances are "host:port" or "http(s)://host:port[/base]", at most
	// 1,000 in one call.
	Instances []string `json:"instances"`
	// TTL is the lease ("30s", 2s to 24h): a registration not renewed
	// within it expires. "": none.
	TTL string `json:"ttl"`
}

// InstancesView is GET .../instances and the answer to a change.
type InstancesView struct {
	Route string `json:"route"`
	Pool  string `json:"pool"`
	// Source is where the pool's instances come from: "file", "dns" or
	// "registration".
	Source    string           `json:"source"`
	Version   string           `json:"version,omitempty"`
	Instances []InstanceRecord `json:"instances"`
}

// InstanceRecord is one instance of a pool.
type InstanceRecord struct {
	Addr    string `json:"addr"`
	Version string `json:"version,omitempty"`
	Source  string `json:"source"`
	// Healthy: in rotation now (false also while a new instance waits
	// for its first probe); absent when the table does not hold it yet.
	Healthy *bool `json:"healthy,omitempty"`
	// TTL and Expires are the lease (registrations with one).
	TTL        string    `json:"ttl,omitempty"`
	Expires    time.Time `json:"expires,omitzero"`
	Registered time.Time `json:"registered,omitzero"`
	Renewed    time.Time `json:"renewed,omitzero"`
	From       string    `json:"from,omitempty"`
}

// maxInstancesBody bounds a registration's body.
const maxInstancesBody = 1 << 20

// RouteView is one route as the API shows it.
type RouteView struct {
	Name string `json:"name"`
	// WeightsVersion counts manual weight changes (PUT .../weights).
	WeightsVersion int             `json:"weights_version"`
	Host           string          `json:"host,omitempty"`
	PathPrefix     string          `json:"path_prefix"`
	Pools          []PoolView      `json:"pools"`
	Rollout        *rollout.Status `json:"rollout,omitempty"`
}

// PoolView is one pool: weights, health, and its last minute of traffic.
type PoolView struct {
	Name string `json:"name"`
	// Version the pool's instances run (pools[].version, a
	// registration's, discovery.version); omitted when unknown.
	Version string `json:"version,omitempty"`
	// Source of its instances: "file", "dns" or "registration".
	Source string `json:"source"`
	// Weight in percent, as set by the config or the rollout.
	Weight float64 `json:"weight"`
	// EffectiveWeight in percent, after health moved shares.
	EffectiveWeight float64        `json:"effective_weight"`
	Panic           bool           `json:"panic"`
	Instances       []InstanceView `json:"instances"`
	LastMinute      Traffic        `json:"last_minute"`
	// RecentRate is the pool's requests per second over the last 10
	// seconds (or since its stats began): what it serves now, where
	// LastMinute still holds traffic from before a weight change.
	RecentRate float64 `json:"recent_rate"`
	// PreviewRequests (and PreviewErrors of them) named this pool by the
	// force header or cookie, since the pool's stats began.
	PreviewRequests uint64 `json:"preview_requests"`
	PreviewErrors   uint64 `json:"preview_errors"`
	// Traffic is the pool's requests on this member since its stats
	// began, by how they came to it.
	Traffic ByClass `json:"traffic"`
}

// ByClass splits a pool's requests by how they came to it.
type ByClass struct {
	// Weighted: the schedule, a sticky key or the affinity cookie.
	Weighted Count `json:"weighted"`
	// Targeted: a match rule (a rollout's segment among them) or a
	// propagated version.
	Targeted Count `json:"targeted"`
	// Propagated: the part of Targeted a propagated version chose.
	Propagated Count `json:"propagated"`
	// Preview: the force header or cookie named the pool.
	Preview Count `json:"preview"`
	// Shadow: copies of other pools' requests (mirror, shadow phase);
	// their answers reach no client.
	Shadow Count `json:"shadow"`
}

// Count is a number of requests and the failed (5xx) among them.
type Count struct {
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
}

// InstanceView is one instance.
type InstanceView struct {
	Addr     string `json:"addr"`
	Healthy  bool   `json:"healthy"`
	InFlight int64  `json:"in_flight"`
	// Why says what took it out of rotation ("active: 3 probes in a row
	// failed; last: GET /healthz: status 404…"); empty while healthy.
	Why string `json:"why,omitempty"`
}

// Traffic summarizes a span of a pool's requests.
type Traffic struct {
	// Seconds is the span the numbers cover: the minute, or less when the
	// pool's stats are younger than that.
	Seconds float64 `json:"seconds"`
	// RatePerSecond is Requests over Seconds (never over a minute the
	// process has not lived).
	RatePerSecond float64 `json:"rate_per_second"`
	Requests      uint64  `json:"requests"`
	Errors        uint64  `json:"errors"`
	Cancelled     uint64  `json:"cancelled"`
	ErrorRate     float64 `json:"error_rate"`
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
}

// New returns the admin handler.
func New(o Options) http.Handler {
	mux := http.NewServeMux()
	api := http.NewServeMux() // /api/ and the dashboard: browser-reachable, Host-checked
	// The dashboard asks for a token only when mutations need one.
	tokenRequired := strconv.FormatBool(o.Token != "")
	mux.Handle("/api/", o.hostCheck(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Canaryd-Token-Required", tokenRequired)
		if o.Cluster != nil {
			// The dashboard asks for the cluster's view only of a member.
			w.Header().Set("X-Canaryd-Cluster", "true")
		}
		api.ServeHTTP(w, r)
	})))
	if o.Dashboard != nil {
		mux.Handle("GET /{$}", o.hostCheck(o.Dashboard))
		mux.Handle("GET /ui/", o.hostCheck(o.Dashboard))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if o.Broken != nil {
			if b := o.Broken(); b != "" {
				text(w, http.StatusServiceUnavailable, "broken: "+b)
				return
			}
		}
		text(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if o.Ready() {
			text(w, http.StatusOK, "ready")
			return
		}
		text(w, http.StatusServiceUnavailable, "not ready")
	})
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics)
	}
	if o.Pprof {
		o.pprof(mux)
	}
	if o.Reload != nil {
		api.Handle("POST /api/v1/reload", o.mutation(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
			defer cancel()
			res := o.Reload(ctx)
			status := http.StatusOK
			if res.Error != "" { // a failed reload says why
				status = http.StatusUnprocessableEntity
			}
			writeJSON(w, status, res)
		}))
	}
	api.HandleFunc("GET /api/v1/cluster", func(w http.ResponseWriter, _ *http.Request) {
		if o.Cluster == nil {
			writeError(w, http.StatusNotFound, "this canaryd is a single process: its config has no cluster block (docs/cluster.md)")
			return
		}
		writeJSON(w, http.StatusOK, o.Cluster())
	})
	if o.Routes != nil {
		o.routesAPI(api)
	}
	if o.Instances != nil {
		o.instancesAPI(api)
	}
	return mux
}

// writeErr maps the errors Routes returns to statuses.
func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrUnknownRoute), errors.Is(err, rollout.ErrNoRollout):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// hostCheck refuses requests whose Host is not an IP literal, localhost or
// an allowed name: a page on an attacker's domain that rebinds its DNS to
// 127.0.0.1 sends its own name as Host and gets nothing.
func (o Options) hostCheck(h http.Handler) http.Handler {
	allowed := map[string]bool{"localhost": true}
	for _, a := range o.AllowedHosts {
		allowed[strings.ToLower(a)] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hp, _, err := net.SplitHostPort(host); err == nil {
			host = hp
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if net.ParseIP(host) == nil && !allowed[strings.ToLower(host)] {
			writeError(w, http.StatusForbidden, fmt.Sprintf("Host %q is not this admin listener's; add it to admin.allowed_hosts if it should be", r.Host))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// routesAPI serves /api/v1/routes and everything under it.
func (o Options) routesAPI(api *http.ServeMux) {
	api.HandleFunc("GET /api/v1/routes", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, o.Routes.Routes())
	})
	api.HandleFunc("GET /api/v1/routes/{route}", func(w http.ResponseWriter, r *http.Request) {
		// One route's view, not all of them filtered: with thousands of
		// routes, the whole list is a lot of work for one answer.
		if rv, ok := o.Routes.Route(r.PathValue("route")); ok {
			writeJSON(w, http.StatusOK, rv)
			return
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %q", r.PathValue("route")))
	})
	api.HandleFunc("GET /api/v1/routes/{route}/series", func(w http.ResponseWriter, r *http.Request) {
		last, step := 5*time.Minute, 5*time.Second
		if v, err := time.ParseDuration(r.URL.Query().Get("last")); err == nil && v > 0 && v <= 10*time.Minute {
			last = v
		}
		if v, err := time.ParseDuration(r.URL.Query().Get("step")); err == nil && v >= time.Second && v <= time.Minute {
			step = v
		}
		series, err := o.Routes.Series(r.PathValue("route"), last, step)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, series)
	})
	api.Handle("PUT /api/v1/routes/{route}/weights", o.mutation(func(w http.ResponseWriter, r *http.Request) {
		var weights map[string]float64
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		if err := dec.Decode(&weights); err != nil {
			writeError(w, http.StatusBadRequest, "body must be a JSON object of pool → percent, e.g. {\"blue\": 90, \"green\": 10}: "+err.Error())
			return
		}
		res, err := o.Routes.SetWeights(r.PathValue("route"), weights)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}))
	api.Handle("POST /api/v1/routes/{route}/approve", o.mutation(func(w http.ResponseWriter, r *http.Request) {
		var req ApproveRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, `body must be a JSON object such as {"gate": "sign-off", "by": "alice", "reason": "dashboards fine"} (every field optional): `+err.Error())
			return
		}
		switch req.Source {
		case "":
			req.Source = rollout.SourceAPI
		case rollout.SourceAPI, rollout.SourceCLI, rollout.SourceDashboard:
		default:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("source %q is not api, cli or dashboard (leave it out: api)", req.Source))
			return
		}
		st, err := o.Routes.Approve(r.PathValue("route"), rollout.Approval{Gate: req.Gate, By: req.By, Reason: req.Reason, Source: req.Source})
		writeRollout(w, r.PathValue("route"), st, err)
	}))
	api.Handle("POST /api/v1/routes/{route}/{action}", o.mutation(func(w http.ResponseWriter, r *http.Request) {
		action, err := rollout.ParseAction(r.PathValue("action"))
		if err != nil {
			writeError(w, http.StatusNotFound, "no such action: "+err.Error())
			return
		}
		st, err := o.Routes.Control(r.PathValue("route"), action)
		writeRollout(w, r.PathValue("route"), st, err)
	}))
}

// writeRollout answers a command to a route's rollout: 404 without the
// route or a rollout, 409 when its state refuses, else the status.
func writeRollout(w http.ResponseWriter, route string, st *rollout.Status, err error) {
	switch {
	case errors.Is(err, ErrUnknownRoute), errors.Is(err, rollout.ErrNoRollout):
		writeError(w, http.StatusNotFound, fmt.Sprintf("route %q: %v", route, err))
	case err != nil:
		writeError(w, http.StatusConflict, err.Error())
	default:
		writeJSON(w, http.StatusOK, st)
	}
}

// instancesAPI serves .../pools/{pool}/instances: list, replace, add,
// remove.
func (o Options) instancesAPI(api *http.ServeMux) {
	const base = "/api/v1/routes/{route}/pools/{pool}/instances"
	api.HandleFunc("GET "+base, func(w http.ResponseWriter, r *http.Request) {
		v, err := o.Instances.Instances(r.PathValue("route"), r.PathValue("pool"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
	register := func(replace bool) http.Handler {
		return o.mutation(func(w http.ResponseWriter, r *http.Request) {
			var req InstancesRequest
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxInstancesBody))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				var tooBig *http.MaxBytesError
				if errors.As(err, &tooBig) {
					writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes; send at most 1,000 instances a call", maxInstancesBody))
					return
				}
				writeError(w, http.StatusBadRequest, `body must be JSON like {"version": "v2.4.0", "instances": ["10.0.0.5:8080"], "ttl": "30s"}: `+err.Error())
				return
			}
			v, err := o.Instances.Register(r.PathValue("route"), r.PathValue("pool"), replace, req, r.RemoteAddr)
			if err != nil {
				writeErr(w, err)
				return
			}
			writeJSON(w, http.StatusOK, v)
		})
	}
	api.Handle("PUT "+base, register(true))
	api.Handle("POST "+base, register(false))
	api.Handle("DELETE "+base+"/{addr}", o.mutation(func(w http.ResponseWriter, r *http.Request) {
		v, err := o.Instances.Deregister(r.PathValue("route"), r.PathValue("pool"), r.PathValue("addr"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// mutation guards a state-changing endpoint: the bearer token, when one
// is configured, and JSON for any body (a cross-site form can only send
// text/plain, urlencoded or multipart bodies without a preflight).
func (o Options) mutation(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if ct != "application/json" {
				writeError(w, http.StatusUnsupportedMediaType, "send the body as Content-Type: application/json")
				return
			}
		}
		if !o.tokenOK(w, r) {
			return
		}
		h(w, r)
	})
}

// tokenOK checks the bearer token, when one is configured; a request
// without it is answered 401 here.
func (o Options) tokenOK(w http.ResponseWriter, r *http.Request) bool {
	if o.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(o.Token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="canaryd"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong bearer token (see admin.token_file)")
		return false
	}
	return true
}

// pprof serves net/http/pprof's handlers, each behind the token (reads
// included) and the Host check (its index is a page a browser can load).
// Importing the package also registers them on http.DefaultServeMux,
// which no server of canaryd's serves.
func (o Options) pprof(mux *http.ServeMux) {
	guard := func(h http.HandlerFunc) http.Handler {
		return o.hostCheck(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if o.tokenOK(w, r) {
				h(w, r)
			}
		}))
	}
	mux.Handle("/debug/pprof/", guard(pprof.Index)) // heap, goroutine, allocs, block, mutex, threadcreate
	mux.Handle("/debug/pprof/cmdline", guard(pprof.Cmdline))
	mux.Handle("/debug/pprof/profile", guard(pprof.Profile))
	mux.Handle("/debug/pprof/symbol", guard(pprof.Symbol))
	mux.Handle("/debug/pprof/trace", guard(pprof.Trace))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func text(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}
