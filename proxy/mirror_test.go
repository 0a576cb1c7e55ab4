package proxy

import (
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// shadowRecorder keeps the mirror's outcomes.
type shadowRecorder struct{ keeper[ShadowOutcome] }

func (r *shadowRecorder) ObserveShadow(o *ShadowOutcome) { r.keep(o) }

// seenRequest is what an instance saw of one request.
type seenRequest struct {
	method, path, query, body string
	header                    http.Header
}

// instance is a loopback instance that records what it is sent and
// answers with answer.
func instance(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) (url string, seen func() []seenRequest) {
	var mu sync.Mutex
	var got []seenRequest
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, seenRequest{r.Method, r.URL.Path, r.URL.RawQuery, string(b), r.Header.Clone()})
		mu.Unlock()
		answer(w, r)
	}))
	return srv.URL, func() []seenRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]seenRequest(nil), got...)
	}
}

func answerText(body string, status int) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// mirrorRig is a proxy whose route "web" serves from blue and mirrors
// share basis points of its requests to green.
func mirrorRig(t *testing.T, blue, green string, share int, o MirrorOptions) (*rig, *Mirror, *shadowRecorder) {
	t.Helper()
	rec := &shadowRecorder{}
	tr := NewTransport(TransportOptions{})
	m := NewMirror(o, tr, rec, nil)
	t.Cleanup(m.Close)
	s := routeSpec(t, pool{"blue", 10000, []string{blue}}, pool{"green", 0, []string{green}})
	s.MirrorPool, s.MirrorShare, s.Mirror = "green", share, m
	return newRig(t, Options{Transport: tr}, s), m, rec
}

func (r *rig) do(t *testing.T, method, path, body string, hdr http.Header) (int, string) {
	t.Helper()
	var rd io.Reader = http.NoBody
	if body != "" {
		rd = strings.NewReader(body)
	}
	resp, b := r.send(t, method, path, rd, hdr)
	return resp.StatusCode, b
}

// Copies reach the mirror pool after the real answer, marked by the
// shadow header and with the same request id, path and query; the share
// is exact; only the safe methods are copied by default; answers match.
func TestMirrorCopies(t *testing.T) {
	blue, _ := instance(t, answerText("same", 200))
	green, greenSaw := instance(t, answerText("same", 200))
	r, _, rec := mirrorRig(t, blue, green, 5000, MirrorOptions{})
	for i := 0; i < 100; i++ {
		if code, body := r.do(t, http.MethodGet, "/a/b?x=1", "", http.Header{"X-Request-Id": {"req-" + strconv.Itoa(i)}, "X-Forwarded-For": {"6.6.6.6"}}); code != 200 || body != "same" {
			t.Fatalf("client got %d %q", code, body)
		}
	}
	for i := 0; i < 10; i++ {
		r.do(t, http.MethodPost, "/post", "data", nil)
	}
	waitFor(t, "50 copies", func() bool { return len(rec.all()) == 50 })
	time.Sleep(50 * time.Millisecond) // no more may come
	saw := greenSaw()
	if len(saw) != 50 {
		t.Fatalf("green saw %d requests, want 50 (half of the GETs, no POST)", len(saw))
	}
	ids := map[string]bool{}
	for _, s := range saw {
		if s.method != http.MethodGet || s.path != "/a/b" || s.query != "x=1" || s.header.Get("X-Canary-Shadow") != "1" {
			t.Errorf("copy: %s %s?%s shadow=%q", s.method, s.path, s.query, s.header.Get("X-Canary-Shadow"))
		}
		ids[s.header.Get("X-Request-Id")] = true
		if xff := s.header.Get("X-Forwarded-For"); xff != "127.0.0.1" {
			t.Errorf("copy's X-Forwarded-For %q: a client's forged one must not pass", xff)
		}
	}
	if len(ids) != 50 || !ids["req-1"] || ids["req-0"] {
		t.Errorf("copies' request ids: %d distinct; every other request from req-1 expected", len(ids))
	}
	for _, o := range rec.all() {
		if o.Dropped || o.Err != nil || o.Status != 200 || o.PrimaryStatus != 200 || !o.Compared || o.Mismatch || o.Pool.Name != "green" {
			t.Errorf("outcome %+v", o)
		}
	}
}

// Bodies are copied only when allowed and within max_body_bytes; the
// real request still gets its whole body.
func TestMirrorBodies(t *testing.T) {
	blue, blueSaw := instance(t, answerText("ok", 200))
	green, greenSaw := instance(t, answerText("ok", 200))
	r, _, rec := mirrorRig(t, blue, green, 10000, MirrorOptions{Methods: []string{"POST"}, MaxBodyBytes: 8})
	r.do(t, http.MethodPost, "/small", "12345678", nil)
	r.do(t, http.MethodPost, "/large", "123456789", nil)
	// A chunked body (no length) larger than the bound: read up to it,
	// then handed whole to the real request.
	req, _ := http.NewRequest(http.MethodPost, r.srv.URL+"/chunked", io.MultiReader(strings.NewReader("1234"), strings.NewReader("567890")))
	req.ContentLength = -1
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, "one copy", func() bool { return len(rec.all()) >= 1 })
	time.Sleep(50 * time.Millisecond)
	gs := greenSaw()
	if len(gs) != 1 || gs[0].path != "/small" || gs[0].body != "12345678" {
		t.Errorf("green saw %+v; want only /small with its body", gs)
	}
	bs := blueSaw()
	sort.Slice(bs, func(i, j int) bool { return bs[i].path < bs[j].path })
	if len(bs) != 3 || bs[0].body != "1234567890" || bs[1].body != "123456789" || bs[2].body != "12345678" {
		t.Errorf("blue saw bodies %q %q %q", bs[0].body, bs[1].body, bs[2].body)
	}
}

// A copy that answers differently is a mismatch: by status class, and,
// when asked, by body and headers.
func TestMirrorCompares(t *testing.T) {
	versioned := func(v string) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Version", v)
			io.WriteString(w, "hello")
		}
	}
	ignore := []string{"Date", "Content-Length", "Content-Type", "X-Request-Id"}
	for _, tc := range []struct {
		name        string
		opts        MirrorOptions
		blue, green func(w http.ResponseWriter, r *http.Request)
		mismatch    bool
		diff        string
	}{
		{"same", MirrorOptions{CompareBody: true, CompareHeaders: true, IgnoreHeaders: ignore}, answerText("hello", 200), answerText("hello", 200), false, ""},
		{"status class", MirrorOptions{}, answerText("hello", 200), answerText("hello", 500), true, "status 200 vs 500"},
		{"same class", MirrorOptions{}, answerText("hello", 200), answerText("hello", 201), false, ""},
		{"body not compared", MirrorOptions{}, answerText("hello", 200), answerText("HELLO", 200), false, ""},
		{"body", MirrorOptions{CompareBody: true}, answerText("hello", 200), answerText("HELLO", 200), true, "body differs"},
		{"header", MirrorOptions{CompareHeaders: true, IgnoreHeaders: ignore}, versioned("1"), versioned("2"), true, "header X-Version differs"},
		{"ignored header", MirrorOptions{CompareHeaders: true, IgnoreHeaders: append([]string{"x-version"}, ignore...)}, versioned("1"), versioned("2"), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blue, _ := instance(t, tc.blue)
			green, _ := instance(t, tc.green)
			r, _, rec := mirrorRig(t, blue, green, 10000, tc.opts)
			if code, body := r.do(t, http.MethodGet, "/", "", nil); code != 200 || body != "hello" {
				t.Fatalf("client got %d %q", code, body)
			}
			waitFor(t, "the copy", func() bool { return len(rec.all()) == 1 })
			o := rec.all()[0]
			if o.Mismatch != tc.mismatch || o.Diff != tc.diff || !o.Compared {
				t.Errorf("mismatch %v (%q), compared %v; want %v (%q)", o.Mismatch, o.Diff, o.Compared, tc.mismatch, tc.diff)
			}
		})
	}
}

// A slow mirror pool never slows the client: copies wait in the bounded
// queue and, when it is full, are dropped and counted.
func TestSlowMirrorDropsNotDelays(t *testing.T) {
	blue, _ := instance(t, answerText("ok", 200))
	release := make(chan struct{})
	var inFlight atomic.Int32
	green, _ := instance(t, func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		io.WriteString(w, "ok")
	})
	r, m, rec := mirrorRig(t, blue, green, 10000, MirrorOptions{Queue: 4, Concurrency: 2, Timeout: 20 * time.Second})
	start := time.Now()
	for i := 0; i < 50; i++ {
		if code, _ := r.do(t, http.MethodGet, "/", "", nil); code != 200 {
			t.Fatalf("client got %d", code)
		}
	}
	took := time.Since(start)
	waitFor(t, "drops", func() bool {
		n := 0
		for _, o := range rec.all() {
			if o.Dropped {
				n++
			}
		}
		return n == 50-4-2
	})
	if took > 3*time.Second {
		t.Errorf("50 requests took %v with a mirror that never answers; the client waited for it", took)
	}
	// The two workers have taken their copies (the drops say so), and
	// each reaches the instance soon; never a third.
	waitFor(t, "two copies at the instance", func() bool { return inFlight.Load() == 2 })
	time.Sleep(50 * time.Millisecond)
	if n := inFlight.Load(); n != 2 {
		t.Errorf("%d copies in flight, want the concurrency, 2", n)
	}
	close(release)
	waitFor(t, "the queued copies", func() bool { return len(rec.all()) == 50 })
	m.Close()
}

// A mirror without an available instance counts an error per copy.
func TestMirrorWithoutInstance(t *testing.T) {
	blue, _ := instance(t, answerText("ok", 200))
	rec := &shadowRecorder{}
	tr := NewTransport(TransportOptions{})
	m := NewMirror(MirrorOptions{}, tr, rec, nil)
	defer m.Close()
	s := routeSpec(t, pool{"blue", 10000, []string{blue}}, pool{"green", 0, []string{"http://" + deadAddr(t)}})
	s.MirrorPool, s.MirrorShare, s.Mirror = "green", 10000, m
	r := newRig(t, Options{Transport: tr}, s)
	if !r.router.SetAvailable(r.router.Load().Route("web").Pools[1].Instances[0], false) {
		t.Fatal("green's instance was already out")
	}
	r.do(t, http.MethodGet, "/", "", nil)
	waitFor(t, "the copy", func() bool { return len(rec.all()) == 1 })
	if o := rec.all()[0]; o.Err == nil || o.Status != http.StatusBadGateway {
		t.Errorf("outcome %+v", o)
	}
}

// The client's latency with a mirror to a slow pool (50 ms an answer), and
// without: the copies are sent after the real answer, from a bounded
// queue, so the two should be the same but for the copying itself.
// go test ./proxy -run XXX -bench MirrorClientLatency -benchtime 3000x
func BenchmarkMirrorClientLatency(b *testing.B) {
	for _, tc := range []struct {
		name     string
		mirrored bool
		service  time.Duration // the real instance's own time per answer
	}{
		{"loopback/without", false, 0}, {"loopback/with-slow-mirror", true, 0},
		{"2ms-service/without", false, 2 * time.Millisecond}, {"2ms-service/with-slow-mirror", true, 2 * time.Millisecond},
	} {
		mirrored := tc.mirrored
		b.Run(tc.name, func(b *testing.B) {
			blue := serve(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(tc.service)
				io.WriteString(w, "ok")
			}))
			green := serve(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(50 * time.Millisecond)
				io.WriteString(w, "ok")
			}))
			tr := NewTransport(TransportOptions{})
			s := routeSpec(b, pool{"blue", 10000, []string{blue.URL}}, pool{"green", 0, []string{green.URL}})
			if mirrored {
				m := NewMirror(MirrorOptions{}, tr, nil, nil)
				defer m.Close()
				s.MirrorPool, s.MirrorShare, s.Mirror = "green", 10000, m
			}
			r := newRig(b, Options{Transport: tr, Observer: nopObserver{}}, s)
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				resp, err := r.client.Get(r.srv.URL + "/")
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

type boomObserver struct{}

func (boomObserver) ObserveShadow(*ShadowOutcome) { panic("injected") }

// A panic in a mirror worker reaches the panic handler.
func TestMirrorWorkerPanicReachesTheHandler(t *testing.T) {
	blue, _ := instance(t, answerText("ok", 200))
	green, _ := instance(t, answerText("ok", 200))
	got := make(chan string, 1)
	tr := NewTransport(TransportOptions{})
	m := NewMirror(MirrorOptions{Concurrency: 1, OnPanic: func(c string, _ any, _ []byte) { got <- c }}, tr, boomObserver{}, nil)
	defer m.Close()
	s := routeSpec(t, pool{"blue", 10000, []string{blue}}, pool{"green", 0, []string{green}})
	s.MirrorPool, s.MirrorShare, s.Mirror = "green", 10000, m
	r := newRig(t, Options{Transport: tr}, s)
	r.do(t, http.MethodGet, "/", "", nil)
	select {
	case c := <-got:
		if c != "mirror worker" {
			t.Fatalf("component %q", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the worker's panic was not handed over")
	}
}
