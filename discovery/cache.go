package discovery

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"canaryd/config"
)

// cache keeps every discovered pool's last applied set in a file
// (state_dir/discovery.json), so that a process that starts while its
// resolver is down serves the last good set it had, not an empty pool:
// the "last good set on every error" rule, across a restart. A set is
// used again only for the same name, port and scheme.
type cache struct {
	path string

	// mu guards sets and orders the writes.
	mu   sync.Mutex
	sets map[string]cachedSet // by route/pool
}

type cachedSet struct {
	DNS       string    `json:"dns"`
	Port      int       `json:"port,omitempty"`
	Scheme    string    `json:"scheme"`
	Instances []string  `json:"instances"` // host:port
	At        time.Time `json:"at"`
}

func cacheKey(k key) string { return k.route + "/" + k.pool }

// openCache reads path; a missing or unreadable file is an empty cache
// (the resolvers start from nothing, as without one).
func openCache(path string) *cache {
	c := &cache{path: path, sets: map[string]cachedSet{}}
	if path == "" {
		return c
	}
	if data, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(data, &c.sets)
	}
	return c
}

// get is the cached set of a pool, if it is of the same name, port and
// scheme as d.
func (c *cache) get(k key, d config.Discovery) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.sets[cacheKey(k)]
	if !ok || s.DNS != d.DNS || s.Port != d.Port || s.Scheme != d.Scheme {
		return nil, false
	}
	return s.Instances, true
}

// put records a pool's applied set and saves the file. An error is
// returned for the log: the serving set does not depend on it.
func (c *cache) put(k key, d config.Discovery, addrs []string) error {
	if c.path == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sets[cacheKey(k)] = cachedSet{DNS: d.DNS, Port: d.Port, Scheme: d.Scheme, Instances: addrs, At: time.Now()}
	return c.saveLocked()
}

// retain drops the pools not in keep and saves.
func (c *cache) retain(keep map[key]bool) {
	if c.path == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.sets)
	for ck := range c.sets {
		found := false
		for k := range keep {
			if cacheKey(k) == ck {
				found = true
			}
		}
		if !found {
			delete(c.sets, ck)
		}
	}
	if len(c.sets) != n {
		_ = c.saveLocked()
	}
}

func (c *cache) saveLocked() error {
	data, err := json.MarshalIndent(c.sets, "", "  ") // keys sorted
	if err != nil {
		return err
	}
	dir := filepath.Dir(c.path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("discovery cache: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".discovery-*.json")
	if err != nil {
		return fmt.Errorf("discovery cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), c.path)
}
