package registry

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pools is a config with route web: blue (registered), green
// (registered), static (file).
type pools struct{}

func (pools) Registered(route, pool string) error {
	switch {
	case route != "web":
		return fail(ErrUnknown, "no route %q", route)
	case pool == "static":
		return fail(ErrNotRegistered, "pool %q takes its instances from the file", pool)
	case pool != "blue" && pool != "green":
		return fail(ErrUnknown, "no pool %q", pool)
	}
	return nil
}

func (pools) ParseInstance(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Port() == "" {
		return nil, fmt.Errorf("instance %q: needs host:port", s)
	}
	return u, nil
}

// sets records what the sink got.
type sets struct {
	mu    sync.Mutex
	calls int
	last  map[string][]string
	ver   map[string]string
}

func (s *sets) SetInstances(route, pool string, urls []*url.URL, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.last == nil {
		s.last, s.ver = map[string][]string{}, map[string]string{}
	}
	var out []string
	for _, u := range urls {
		out = append(out, u.Host)
	}
	s.last[route+"/"+pool] = out
	s.ver[route+"/"+pool] = version
}

func (s *sets) get(k string) ([]string, string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[k], s.ver[k], s.calls
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTest(t *testing.T) (*Registry, *sets, *clock, string) {
	t.Helper()
	c := &clock{t: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "instances.json")
	f, loaded, err := OpenFile(path, c.now)
	if err != nil {
		t.Fatal(err)
	}
	s := &sets{}
	return New(Options{Pools: pools{}, Sink: s, Store: f, Expire: true, Now: c.now}, loaded), s, c, path
}

// Every bad request is refused with its kind of error, and changes
// nothing: not the set, not the file, not the sink.
func TestBadRequestsChangeNothing(t *testing.T) {
	many := make([]string, MaxPerCall+1)
	for i := range many {
		many[i] = fmt.Sprintf("10.0.%d.%d:80", i/250, i%250)
	}
	for _, tc := range []struct {
		name         string
		route, pool  string
		mode         Mode
		req          Request
		kind         error
		wantInReason string
	}{
		{"unknown route", "shop", "blue", Replace, Request{Instances: []string{"127.0.0.1:1"}}, ErrUnknown, `no route "shop"`},
		{"unknown pool", "web", "teal", Replace, Request{Instances: []string{"127.0.0.1:1"}}, ErrUnknown, `no pool "teal"`},
		{"static pool", "web", "static", Add, Request{Instances: []string{"127.0.0.1:1"}}, ErrNotRegistered, "from the file"},
		{"address that does not parse", "web", "blue", Replace, Request{Instances: []string{"127.0.0.1:1", "nope"}}, ErrInvalid, "instances[1]"},
		{"duplicate", "web", "blue", Add, Request{Instances: []string{"127.0.0.1:1", "http://127.0.0.1:1"}}, ErrInvalid, "instances[0] again"},
		{"ttl under 2s", "web", "blue", Add, Request{Instances: []string{"127.0.0.1:1"}, TTL: "1s"}, ErrInvalid, "etcd's lease minimum"},
		{"ttl over 24h", "web", "blue", Add, Request{Instances: []string{"127.0.0.1:1"}, TTL: "25h"}, ErrInvalid, "not from 2s to 24h0m0s"},
		{"ttl not a duration", "web", "blue", Add, Request{Instances: []string{"127.0.0.1:1"}, TTL: "30"}, ErrInvalid, `"30s"`},
		{"too many", "web", "blue", Replace, Request{Instances: many}, ErrInvalid, "at most 1000"},
		{"no instances to add", "web", "blue", Add, Request{}, ErrInvalid, "no instances"},
		{"version with a space", "web", "blue", Replace, Request{Version: "v 2", Instances: []string{"127.0.0.1:1"}}, ErrInvalid, "without spaces"},
		{"another version into a pool that has one", "web", "green", Add, Request{Version: "v3", Instances: []string{"127.0.0.1:9"}}, ErrConflict, `runs version "v2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, s, _, path := newTest(t)
			if _, err := r.Register("web", "green", Replace, Request{Version: "v2", Instances: []string{"127.0.0.1:5"}}, "test"); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			_, _, calls := s.get("")
			_, err := r.Register(tc.route, tc.pool, tc.mode, tc.req, "test")
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.wantInReason) {
				t.Fatalf("err = %v; want %v saying %q", err, tc.kind, tc.wantInReason)
			}
			after, _ := os.ReadFile(path)
			if string(before) != string(after) {
				t.Fatal("the file changed")
			}
			if _, _, c := s.get(""); c != calls {
				t.Fatal("the sink was called")
			}
			if got := r.List("web", "green"); len(got) != 1 || got[0].Host() != "127.0.0.1:5" {
				t.Fatalf("green = %v", got)
			}
		})
	}
}

func TestReplaceAddRemove(t *testing.T) {
	r, s, c, _ := newTest(t)
	if _, err := r.Register("web", "blue", Replace, Request{Version: "v1", Instances: []string{"127.0.0.1:1", "127.0.0.1:2"}}, "a"); err != nil {
		t.Fatal(err)
	}
	if got, v, _ := s.get("web/blue"); strings.Join(got, ",") != "127.0.0.1:1,127.0.0.1:2" || v != "v1" {
		t.Fatalf("after PUT: %v %q", got, v)
	}
	c.t = c.t.Add(time.Second)
	// POST without a version keeps the pool's; an instance already there
	// is renewed, not duplicated, and keeps its first registration time.
	regs, err := r.Register("web", "blue", Add, Request{Instances: []string{"127.0.0.1:2", "127.0.0.1:3"}}, "b")
	if err != nil {
		t.Fatal(err)
	}
	if len(regs) != 3 || regs[1].Registered.Equal(regs[1].Renewed) || regs[2].Version != "v1" {
		t.Fatalf("after POST: %+v", regs)
	}
	if _, err := r.Remove("web", "blue", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Remove("web", "blue", "127.0.0.1:1"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("removing it again: %v", err)
	}
	if got, _, _ := s.get("web/blue"); strings.Join(got, ",") != "127.0.0.1:2,127.0.0.1:3" {
		t.Fatalf("after DELETE: %v", got)
	}
	// PUT of another set replaces it whole, and of none empties the pool.
	if _, err := r.Register("web", "blue", Replace, Request{Version: "v3", Instances: []string{"[::1]:4"}}, "c"); err != nil {
		t.Fatal(err)
	}
	if got, v, _ := s.get("web/blue"); strings.Join(got, ",") != "[::1]:4" || v != "v3" {
		t.Fatalf("after the second PUT: %v %q", got, v)
	}
	if _, err := r.Remove("web", "blue", "[::1]:4"); err != nil {
		t.Fatal(err)
	}
	// An empty pool takes any version on POST.
	if _, err := r.Register("web", "blue", Add, Request{Version: "v4", Instances: []string{"127.0.0.1:5"}}, "d"); err != nil {
		t.Fatal(err)
	}
}

// A lease not renewed expires, and the pool's set is published without
// it; a renewal (the same POST) moves the expiry; a registration without
// a TTL stays.
func TestLeasesExpire(t *testing.T) {
	r, s, c, _ := newTest(t)
	if _, err := r.Register("web", "blue", Add, Request{Instances: []string{"127.0.0.1:1"}, TTL: "10s"}, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register("web", "blue", Add, Request{Instances: []string{"127.0.0.1:2"}}, "a"); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(8 * time.Second)
	r.expire()
	if got, _, _ := s.get("web/blue"); len(got) != 2 {
		t.Fatalf("at 8s: %v", got)
	}
	if _, err := r.Register("web", "blue", Add, Request{Instances: []string{"127.0.0.1:1"}, TTL: "10s"}, "a"); err != nil { // heartbeat
		t.Fatal(err)
	}
	c.t = c.t.Add(8 * time.Second)
	r.expire()
	if got, _, _ := s.get("web/blue"); len(got) != 2 {
		t.Fatalf("8s after the heartbeat: %v", got)
	}
	c.t = c.t.Add(3 * time.Second)
	r.expire()
	if got, _, _ := s.get("web/blue"); strings.Join(got, ",") != "127.0.0.1:2" {
		t.Fatalf("11s after the heartbeat: %v", got)
	}
}

// A restart resumes every registration from the file, each lease with the
// time it had left at the last save, counted from the restart.
func TestRestartResumesLeases(t *testing.T) {
	r, _, c, path := newTest(t)
	if _, err := r.Register("web", "blue", Replace, Request{Version: "v1", Instances: []string{"127.0.0.1:1"}, TTL: "30s"}, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register("web", "green", Add, Request{Version: "v2", Instances: []string{"127.0.0.1:2"}}, "a"); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(10 * time.Second) // saved at +0 with 30s left; restarted at +10s, down for a while
	later := &clock{t: c.t.Add(time.Hour)}
	f, loaded, err := OpenFile(path, later.now)
	if err != nil {
		t.Fatal(err)
	}
	s := &sets{}
	r2 := New(Options{Pools: pools{}, Sink: s, Store: f, Expire: true, Now: later.now}, loaded)
	r2.Publish()
	if got, v, _ := s.get("web/blue"); strings.Join(got, ",") != "127.0.0.1:1" || v != "v1" {
		t.Fatalf("blue after restart: %v %q", got, v)
	}
	if got, v, _ := s.get("web/green"); strings.Join(got, ",") != "127.0.0.1:2" || v != "v2" {
		t.Fatalf("green after restart: %v %q", got, v)
	}
	if g := r2.List("web", "blue")[0]; !g.Expires.Equal(later.t.Add(30 * time.Second)) {
		t.Fatalf("lease resumed to %v; want 30s from the restart", g.Expires)
	}
	later.t = later.t.Add(31 * time.Second)
	r2.expire()
	if got, _, _ := s.get("web/blue"); len(got) != 0 {
		t.Fatalf("blue 31s after restart: %v", got)
	}
	// A file that is not JSON says how to get going again.
	os.WriteFile(path, []byte("{"), 0o644)
	if _, _, err := OpenFile(path, nil); err == nil || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("corrupt file: %v", err)
	}
}

// A store that fails leaves everything as it was.
func TestStoreFailureChangesNothing(t *testing.T) {
	s := &sets{}
	r := New(Options{Pools: pools{}, Sink: s, Store: failing{}}, nil)
	if _, err := r.Register("web", "blue", Add, Request{Instances: []string{"127.0.0.1:1"}}, "a"); !errors.Is(err, ErrStore) {
		t.Fatalf("err = %v", err)
	}
	if len(r.List("web", "blue")) != 0 || s.calls != 0 {
		t.Fatal("a failed save changed the set")
	}
}

type failing struct{}

func (failing) Write([]Registration, []Key) error { return errors.New("etcd unreachable") }

// The expiry loop stops with Close (goleak checks it).
func TestExpiryLoopStops(t *testing.T) {
	r, s, _, _ := newTest(t)
	r.o.Now = time.Now
	r.o.Check = 10 * time.Millisecond
	r.Start()
	if _, err := r.Register("web", "blue", Add, Request{Instances: []string{"127.0.0.1:1"}, TTL: "2s"}, "a"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got, _, _ := s.get("web/blue"); len(got) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lease never expired")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.Close()
}

// Heartbeats of many instances do not each rewrite the file: renewals
// alone are saved at most once a second (and at Close); any change of a
// set is saved at once.
func TestRenewalsAreSavedAtMostOnceASecond(t *testing.T) {
	r, _, c, path := newTest(t)
	f := r.o.Store.(*File)
	var addrs []string
	for i := 0; i < 100; i++ {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", 10000+i))
	}
	if _, err := r.Register("web", "blue", Replace, Request{Instances: addrs, TTL: "30s"}, "a"); err != nil {
		t.Fatal(err)
	}
	before := f.writes
	for i, a := range addrs { // 100 heartbeats within 0.99 s
		c.t = c.t.Add(9900 * time.Microsecond)
		if _, err := r.Register("web", "blue", Add, Request{Instances: []string{a}, TTL: "30s"}, "a"); err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
	}
	if got := f.writes - before; got != 0 {
		t.Fatalf("100 renewals within a second wrote the file %d times", got)
	}
	c.t = c.t.Add(20 * time.Millisecond)
	if _, err := r.Register("web", "blue", Add, Request{Instances: addrs[:1], TTL: "30s"}, "a"); err != nil {
		t.Fatal(err)
	}
	if got := f.writes - before; got != 1 {
		t.Fatalf("a renewal a second after the last save wrote %d times; want 1", got)
	}
	if _, err := r.Register("web", "blue", Add, Request{Instances: []string{"127.0.0.2:1"}, TTL: "30s"}, "a"); err != nil {
		t.Fatal(err)
	}
	if got := f.writes - before; got != 2 {
		t.Fatalf("a new registration was not saved at once (%d writes)", got)
	}
	// Renewed since the last save, then a clean stop: saved.
	c.t = c.t.Add(100 * time.Millisecond)
	r.Register("web", "blue", Add, Request{Instances: addrs[5:6], TTL: "30s"}, "a")
	r.Close()
	_, loaded, err := OpenFile(path, c.now)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range loaded {
		if g.Host() == addrs[5] && !g.Renewed.Equal(c.t) {
			t.Fatalf("the last renewal was not saved at Close: %v, want %v", g.Renewed, c.t)
		}
	}
}

// A process with no registrations writes no file: not at a clean stop,
// not for an empty set from etcd.
func TestNoRegistrationsNoFile(t *testing.T) {
	r, _, _, path := newTest(t)
	r.Close()
	f, _, err := OpenFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SaveAll(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a registry with nothing registered wrote %s (%v)", path, err)
	}
}
