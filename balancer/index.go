package balancer

import "strings"

// routeIndex finds a request's route without scanning the table: a map
// from host (lower case) to that host's prefixes, and the catch-all
// routes' prefixes, each in a radix tree that yields the longest prefix of
// a path in one walk down it. The rules are the table's: a route with the
// request's host beats a catch-all one, and among those that match, the
// longest path_prefix wins.
type routeIndex struct {
	hosts    map[string]*radix
	catchAll *radix
}

// buildIndex indexes routes by their position in the slice: a table that
// replaces one route by its recompiled self shares the index.
func buildIndex(routes []*Route) routeIndex {
	ix := routeIndex{hosts: map[string]*radix{}, catchAll: &radix{}}
	for i, r := range routes {
		t := ix.catchAll
		if r.Host != "" {
			h := strings.ToLower(r.Host)
			if t = ix.hosts[h]; t == nil {
				t = &radix{}
				ix.hosts[h] = t
			}
		}
		t.insert(r.PathPrefix, int32(i+1))
	}
	return ix
}

// match returns the position of the request's route, -1 for none.
func (ix *routeIndex) match(host, path string) int {
	if len(ix.hosts) > 0 {
		// ToLower returns host itself when it has no upper-case letter: no
		// allocation for the usual request.
		if t := ix.hosts[strings.ToLower(host)]; t != nil {
			if r := t.longest(path); r != 0 {
				return int(r - 1)
			}
		}
	}
	if ix.catchAll == nil {
		return -1 // the empty table
	}
	return int(ix.catchAll.longest(path) - 1)
}

// radix is a node of a compressed prefix tree: the edge into it is
// prefix, and route (a position plus one; 0 for none) is set when the path
// so far is a route's whole prefix.
type radix struct {
	prefix   string
	route    int32
	first    []byte // first byte of each child's prefix, in step with children
	children []*radix
}

// insert adds key; the first route inserted for a key keeps it (the table
// rejects duplicates before this).
func (n *radix) insert(key string, r int32) {
	for {
		if key == "" {
			if n.route == 0 {
				n.route = r
			}
			return
		}
		i := n.child(key[0])
		if i < 0 {
			n.first = append(n.first, key[0])
			n.children = append(n.children, &radix{prefix: key, route: r})
			return
		}
		c := n.children[i]
		common := commonPrefix(c.prefix, key)
		if common < len(c.prefix) {
			// Split c: a new node for the shared part, c below it.
			mid := &radix{prefix: c.prefix[:common], first: []byte{c.prefix[common]}, children: []*radix{c}}
			c.prefix = c.prefix[common:]
			n.children[i] = mid
			c = mid
		}
		n, key = c, key[common:]
	}
}

func (n *radix) child(b byte) int {
	for i, f := range n.first {
		if f == b {
			return i
		}
	}
	return -1
}

// longest returns the route of the longest key that is a prefix of path.
func (n *radix) longest(path string) int32 {
	best := n.route
	for path != "" {
		i := n.child(path[0])
		if i < 0 {
			break
		}
		c := n.children[i]
		if !strings.HasPrefix(path, c.prefix) {
			break
		}
		path = path[len(c.prefix):]
		n = c
		if n.route != 0 {
			best = n.route
		}
	}
	return best
}

func commonPrefix(a, b string) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}
