package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"canaryd/balancer"
	"canaryd/panics"

	"go.uber.org/zap"
)

// ShadowObserver receives the outcome of every mirrored request (and of
// every copy dropped). It runs on a mirror worker, never on the request
// path.
type ShadowObserver interface {
	ObserveShadow(*ShadowOutcome)
}

// ShadowOutcome is what happened to one copy.
type ShadowOutcome struct {
	Route *balancer.Route
	Pool  *balancer.Pool
	// Dropped: the copy was never sent (the queue was full, or the mirror
	// closed); nothing below is set.
	Dropped bool
	// Status of the copy's answer; 502 when it got none (Err says why).
	Status   int
	Duration time.Duration
	Err      error
	// PrimaryStatus and PrimaryDuration are the real answer's, to the same
	// request.
	PrimaryStatus   int
	PrimaryDuration time.Duration
	// Compared: the answers could be compared (both complete within the
	// bounds). Mismatch: they differed, and Diff says how.
	Compared, Mismatch bool
	Diff               string
	RequestID          string
}

// MirrorOptions configures a Mirror. Zero values take the defaults of
// config.MirrorOptions.
type MirrorOptions struct {
	// Methods copied. Default GET, HEAD, OPTIONS.
	Methods []string
	// MaxBodyBytes: requests with a body up to this size are copied, the
	// body buffered. Default 0: requests with a body are not.
	MaxBodyBytes int64
	// Header marks each copy (value "1"). Default "X-Canary-Shadow".
	Header string
	// Queue bounds the copies waiting; Concurrency the copies in flight.
	// Defaults 256 and 16.
	Queue, Concurrency int
	// Timeout of one copy. Default 10s.
	Timeout time.Duration
	// CompareHeaders and CompareBody add to the status class comparison;
	// IgnoreHeaders are left out of the first, CompareMaxBytes bounds the
	// second (default 1 MiB).
	CompareHeaders, CompareBody bool
	IgnoreHeaders               []string
	CompareMaxBytes             int64
	// PreserveHost sends the client's Host, as the route does.
	PreserveHost bool
	// OnPanic hears of a panic in a worker (default: printed to stderr).
	OnPanic panics.Handler
}

// Mirror sends copies of a route's requests to a pool and compares their
// answers with the real ones. The client's answer never waits for it: a
// copy is queued (bounded; when the queue is full it is dropped and
// counted) after the real answer is done, and a fixed set of workers sends
// the copies. Create it with NewMirror; Close it when the route no longer
// mirrors.
type Mirror struct {
	opts    MirrorOptions
	methods map[string]bool
	ignore  map[string]bool
	next    http.RoundTripper
	obs     ShadowObserver
	log     *zap.Logger

	q      chan *mirrorJob
	done   chan struct{}
	closed atomic.Bool
	// ctx ends with Close: copies in flight are abandoned then, so that a
	// slow canary never holds up a reload or the process's exit.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// lastLog rate-limits the mismatch log to one line a second.
	lastLog atomic.Int64
}

// The zero MirrorOptions' values (the config's defaults too: a test in app
// holds them equal).
const (
	DefaultMirrorQueue       = 256
	DefaultMirrorConcurrency = 16
	DefaultMirrorTimeout     = 10 * time.Second
	DefaultCompareMaxBytes   = 1 << 20
)

// NewMirror starts a mirror's workers. next sends the copies (the proxy's
// transport); obs may be nil.
func NewMirror(o MirrorOptions, next http.RoundTripper, obs ShadowObserver, log *zap.Logger) *Mirror {
	if len(o.Methods) == 0 {
		o.Methods = []string{http.MethodGet, http.MethodHead, http.MethodOptions}
	}
	if o.Header == "" {
		o.Header = "X-Canary-Shadow"
	}
	if o.Queue <= 0 {
		o.Queue = DefaultMirrorQueue
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultMirrorConcurrency
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultMirrorTimeout
	}
	if o.CompareMaxBytes <= 0 {
		o.CompareMaxBytes = DefaultCompareMaxBytes
	}
	if log == nil {
		log = zap.NewNop()
	}
	m := &Mirror{opts: o, methods: map[string]bool{}, ignore: map[string]bool{}, next: next, obs: obs, log: log,
		q: make(chan *mirrorJob, o.Queue), done: make(chan struct{})}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	for _, x := range o.Methods {
		m.methods[x] = true
	}
	for _, x := range o.IgnoreHeaders {
		m.ignore[textproto.CanonicalMIMEHeaderKey(x)] = true
	}
	m.opts.Header = textproto.CanonicalMIMEHeaderKey(o.Header)
	m.wg.Add(o.Concurrency)
	for i := 0; i < o.Concurrency; i++ {
		go m.work()
	}
	return m
}

// Close stops the workers, abandoning the copies in flight (counted as
// errors); copies still queued are dropped (and counted).
func (m *Mirror) Close() {
	if m.closed.Swap(true) {
		return
	}
	close(m.done)
	m.cancel()
	m.wg.Wait()
	for {
		select {
		case j := <-m.q:
			m.observe(&ShadowOutcome{Route: j.route, Pool: j.route.MirrorPool, Dropped: true, RequestID: j.id})
		default:
			return
		}
	}
}

// mirrorJob is one copy: the request as the client sent it, and the real
// answer once it is done.
type mirrorJob struct {
	route  *balancer.Route
	id     string
	method string
	url    url.URL // the client's target: path and query
	host   string
	header http.Header
	body   []byte

	primaryStatus int
	primaryDur    time.Duration
	primaryHeader http.Header
	primaryBody   bodyDigest
}

// bodyDigest is a bounded hash of a body: SHA-256 of its first max bytes,
// and whether it went past them.
type bodyDigest struct {
	sum       [sha256.Size]byte
	n         int64
	truncated bool
}

// prepare decides whether r is copied and, if so, captures what the copy
// needs before the real request consumes it: its head and, within
// MaxBodyBytes, its body (r.Body is then replaced by the buffered bytes
// followed by whatever was not read). It returns nil when r is not
// copied: a method not listed, an upgrade, a body too large, or not this
// request's turn of the share.
func (m *Mirror) prepare(route *balancer.Route, r *http.Request, id string) *mirrorJob {
	if !m.methods[r.Method] || r.Header.Get("Upgrade") != "" {
		return nil
	}
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	if hasBody && (m.opts.MaxBodyBytes == 0 || r.ContentLength > m.opts.MaxBodyBytes) {
		return nil
	}
	if !route.MirrorTake() {
		return nil
	}
	j := &mirrorJob{route: route, id: id, method: r.Method, url: *r.URL, host: r.Host, header: r.Header.Clone()}
	// What the real request gets from canaryd, the copy gets too: no
	// forwarding headers a client could have forged (the copy says where
	// it came from itself), and no preview secret.
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		delete(j.header, k)
	}
	if k := route.ForceSecretHeader; k != "" {
		delete(j.header, k)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		j.header.Set("X-Forwarded-For", host)
	}
	if hasBody {
		buf, err := io.ReadAll(io.LimitReader(r.Body, m.opts.MaxBodyBytes+1))
		rest := r.Body
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), rest), rest}
		if err != nil || int64(len(buf)) > m.opts.MaxBodyBytes {
			return nil // larger than declared, or broken: the real request will say so
		}
		j.body = buf
	}
	return j
}

type readCloser struct {
	io.Reader
	io.Closer
}

// enqueue hands a job to the workers once the real answer is complete. It
// never blocks: a full queue drops the copy.
func (m *Mirror) enqueue(j *mirrorJob) {
	if m.closed.Load() {
		m.observe(&ShadowOutcome{Route: j.route, Pool: j.route.MirrorPool, Dropped: true, RequestID: j.id})
		return
	}
	select {
	case m.q <- j:
	default:
		m.observe(&ShadowOutcome{Route: j.route, Pool: j.route.MirrorPool, Dropped: true, RequestID: j.id})
	}
}

func (m *Mirror) work() {
	defer m.wg.Done()
	defer panics.Recover(m.opts.OnPanic, "mirror worker")
	for {
		select {
		case <-m.done:
			return
		case j := <-m.q:
			m.send(j)
		}
	}
}

// hopHeaders are not forwarded (RFC 9110 section 7.6.1), as ReverseProxy
// does for the real request.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// send sends one copy and compares its answer with the real one.
func (m *Mirror) send(j *mirrorJob) {
	pool := j.route.MirrorPool
	out := &ShadowOutcome{Route: j.route, Pool: pool, RequestID: j.id, PrimaryStatus: j.primaryStatus, PrimaryDuration: j.primaryDur, Status: http.StatusBadGateway}
	defer m.observe(out)
	inst := pool.Pick()
	if inst == nil {
		out.Err = errNoMirrorInstance
		return
	}
	inst.Acquire()
	defer inst.Release()
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	defer cancel()
	var body io.Reader
	if j.body != nil {
		body = bytes.NewReader(j.body)
	}
	req, err := http.NewRequestWithContext(ctx, j.method, inst.URL.String(), body)
	if err != nil {
		out.Err = err
		return
	}
	setTarget(req, &j.url, inst.URL)
	req.URL.RawQuery = j.url.RawQuery
	req.Header = j.header
	for _, k := range j.header.Values("Connection") {
		for _, f := range strings.Split(k, ",") {
			req.Header.Del(strings.TrimSpace(f))
		}
	}
	for _, k := range hopHeaders {
		req.Header.Del(k)
	}
	req.Header.Set(m.opts.Header, "1")
	req.Header.Set(HeaderRequestID, j.id)
	if m.opts.PreserveHost {
		req.Host = j.host
	}
	start := time.Now()
	next := m.next
	if pool.Transport != nil {
		next = pool.Transport
	}
	resp, err := next.RoundTrip(req)
	if err != nil {
		out.Duration, out.Err = time.Since(start), err
		return
	}
	d := digest(resp.Body, m.opts.CompareMaxBytes, m.opts.CompareBody)
	resp.Body.Close()
	out.Status, out.Duration = resp.StatusCode, time.Since(start)
	out.Compared, out.Mismatch, out.Diff = m.compare(j, resp, d)
	if out.Mismatch {
		m.logMismatch(out)
	}
}

var errNoMirrorInstance = errors.New("the mirror pool has no available instance")

// digest reads a body to its end (within a bound) and hashes the first
// max bytes when asked.
func digest(r io.Reader, max int64, hashIt bool) bodyDigest {
	var d bodyDigest
	var h hash.Hash
	if hashIt {
		h = sha256.New()
	}
	w := io.Discard
	if h != nil {
		w = h
	}
	n, _ := io.Copy(w, io.LimitReader(r, max))
	d.n = n
	if extra, _ := io.Copy(io.Discard, io.LimitReader(r, 1)); extra > 0 {
		d.truncated = true
	}
	if h != nil {
		copy(d.sum[:], h.Sum(nil))
	}
	return d
}

// compare says whether the copy's answer matches the real one: the same
// status class; with CompareHeaders the same headers (but the ignored
// ones); with CompareBody the same body. A body past CompareMaxBytes on
// either side cannot be compared.
func (m *Mirror) compare(j *mirrorJob, resp *http.Response, d bodyDigest) (compared, mismatch bool, diff string) {
	if j.primaryStatus/100 != resp.StatusCode/100 {
		return true, true, statusDiff(j.primaryStatus, resp.StatusCode)
	}
	if m.opts.CompareHeaders {
		if k := m.headerDiff(j.primaryHeader, resp.Header); k != "" {
			return true, true, "header " + k + " differs"
		}
	}
	if m.opts.CompareBody {
		if j.primaryBody.truncated || d.truncated {
			return false, false, ""
		}
		if j.primaryBody.n != d.n || j.primaryBody.sum != d.sum {
			return true, true, "body differs"
		}
	}
	return true, false, ""
}

func statusDiff(a, b int) string {
	return "status " + strconv.Itoa(a) + " vs " + strconv.Itoa(b)
}

func (m *Mirror) headerDiff(a, b http.Header) string {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if m.ignore[k] {
			continue
		}
		if strings.Join(a[k], "\x00") != strings.Join(b[k], "\x00") {
			return k
		}
	}
	return ""
}

func (m *Mirror) logMismatch(o *ShadowOutcome) {
	now := time.Now().UnixNano()
	last := m.lastLog.Load()
	if now-last < int64(time.Second) || !m.lastLog.CompareAndSwap(last, now) {
		return
	}
	m.log.Info("shadow answer differs (one logged a second)", zap.String("route", o.Route.Name), zap.String("pool", o.Pool.Name),
		zap.String("request_id", o.RequestID), zap.String("diff", o.Diff),
		zap.Int("status", o.PrimaryStatus), zap.Int("shadow_status", o.Status))
}

func (m *Mirror) observe(o *ShadowOutcome) {
	if m.obs != nil {
		m.obs.ObserveShadow(o)
	}
}

// bodyHasher hashes the real answer's body for the comparison, within
// CompareMaxBytes, as it goes to the client.
type bodyHasher struct {
	http.ResponseWriter
	h   hash.Hash
	max int64
	d   *bodyDigest
}

func (b *bodyHasher) Write(p []byte) (int, error) {
	n, err := b.ResponseWriter.Write(p)
	if room := b.max - b.d.n; room > 0 {
		k := int64(n)
		if k > room {
			k = room
			b.d.truncated = true
		}
		b.h.Write(p[:k])
		b.d.n += k
	} else if n > 0 {
		b.d.truncated = true
	}
	return n, err
}

func (b *bodyHasher) Unwrap() http.ResponseWriter { return b.ResponseWriter }

func (b *bodyHasher) finish() { copy(b.d.sum[:], b.h.Sum(nil)) }
