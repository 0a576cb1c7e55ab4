package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"time"
)

// Cluster makes several canaryd replicas act as one router on etcd v3:
// every member serves the same weights, one leader runs the rollouts on
// the whole cluster's traffic (docs/cluster.md). Without the block canaryd
// is a single process and needs no etcd.
type Cluster struct {
	// Name is the cluster's key prefix in etcd, /canaryd/<name>/.
	// Required.
	Name string `yaml:"name"`
	// Member is this replica's unique id. Default "": the hostname and a
	// random suffix, new at every start.
	Member string `yaml:"member"`
	// Etcd is how to reach etcd.
	Etcd ClusterEtcd `yaml:"etcd"`
	// SessionTTL is the leader's lease: a leader that stops answering is
	// replaced within it. Default 5s; at least 2s (etcd's minimum).
	SessionTTL Duration `yaml:"session_ttl"`
	// PartitionTimeout is how long a member cut off from etcd keeps the
	// last weights it got before on_partition applies. Default 30s.
	PartitionTimeout Duration `yaml:"partition_timeout"`
	// OnPartition is what a member cut off for partition_timeout does
	// with routes whose rollout is under way: "stable" sends their traffic
	// to the stable pool, "hold" keeps the last weights. Default "stable".
	OnPartition string `yaml:"on_partition"`
	// Advertise is the proxy address other members and operators see in
	// GET /api/v1/cluster. Default "": the listen address.
	Advertise string `yaml:"advertise"`
}

// ClusterEtcd is the etcd client's settings.
type ClusterEtcd struct {
	// Endpoints are etcd members, host:port or URLs. Default
	// ["127.0.0.1:2379"].
	Endpoints []string `yaml:"endpoints"`
	// DialTimeout bounds each connection attempt. Default 2s.
	DialTimeout Duration `yaml:"dial_timeout"`
	// TLS to etcd: a CA to verify it, and a client certificate. Default
	// plain.
	TLS ClusterTLS `yaml:"tls"`
}

// ClusterTLS is the TLS to etcd.
type ClusterTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether etcd is reached over TLS.
func (t ClusterTLS) Enabled() bool { return t.CAFile != "" || t.CertFile != "" }

// Partition behaviours (cluster.on_partition).
const (
	OnPartitionStable = "stable"
	OnPartitionHold   = "hold"
)

// Cluster defaults.
const (
	DefaultSessionTTL       = 5 * time.Second
	DefaultPartitionTimeout = 30 * time.Second
	DefaultEtcdDialTimeout  = 2 * time.Second
	DefaultEtcdEndpoint     = "127.0.0.1:2379"
)

func (c *Cluster) applyDefaults() {
	if len(c.Etcd.Endpoints) == 0 {
		c.Etcd.Endpoints = []string{DefaultEtcdEndpoint}
	}
	setDur(&c.Etcd.DialTimeout, DefaultEtcdDialTimeout)
	setDur(&c.SessionTTL, DefaultSessionTTL)
	setDur(&c.PartitionTimeout, DefaultPartitionTimeout)
	setStr(&c.OnPartition, OnPartitionStable)
}

func (v *validator) cluster(c *Cluster) {
	p := path{"cluster"}
	if c.Name == "" {
		v.add(append(p, "name"), "required: the cluster's name, its key prefix in etcd (/canaryd/<name>/); every replica of one router uses the same")
	} else {
		v.name(append(p, "name"), "cluster", c.Name)
	}
	if c.Member != "" {
		v.name(append(p, "member"), "member", c.Member)
	}
	for i, e := range c.Etcd.Endpoints {
		if e == "" {
			v.add(append(p, "etcd", "endpoints", i), "empty; give host:port of an etcd member")
		}
	}
	if c.SessionTTL.D() < 2*time.Second {
		v.add(append(p, "session_ttl"), "%v is shorter than 2s, etcd's shortest lease; the default is %v", c.SessionTTL, DefaultSessionTTL)
	}
	if c.SessionTTL.D()%time.Second != 0 {
		v.add(append(p, "session_ttl"), "%v: etcd leases are whole seconds; use for example 5s", c.SessionTTL)
	}
	if c.PartitionTimeout.D() < c.SessionTTL.D() {
		v.add(append(p, "partition_timeout"), "%v is shorter than session_ttl %v: a member would give up on the cluster before a leader is replaced", c.PartitionTimeout, c.SessionTTL)
	}
	if c.OnPartition != OnPartitionStable && c.OnPartition != OnPartitionHold {
		v.add(append(p, "on_partition"), "%q: use %q (the default) or %q", c.OnPartition, OnPartitionStable, OnPartitionHold)
	}
	if c.Etcd.TLS.CertFile != "" || c.Etcd.TLS.KeyFile != "" {
		v.pair(append(p, "etcd", "tls"), c.Etcd.TLS.CertFile, c.Etcd.TLS.KeyFile)
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			v.add(append(p, "advertise"), "%q is not host:port: %v", c.Advertise, err)
		}
	}
}

// RoutesHash identifies what the cluster's members must agree on: the
// routes (member-specific settings such as listen, admin, state_dir and
// cluster.member are outside them).
func (c *Config) RoutesHash() string { return hashJSON(c.Routes) }

// RouteHash identifies one route's settings (config drift is judged per
// route: a rollout pauses only when its own route differs).
func (r Route) Hash() string { return hashJSON(r) }

func hashJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Routes are plain data; this cannot happen, and an empty hash
		// would still differ from every member's real one.
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
