package metrics

import "github.com/prometheus/client_golang/prometheus"

// Cluster exports a cluster member's view (docs/cluster.md).
type Cluster struct {
	connected prometheus.Gauge
	leader    prometheus.Gauge
	members   prometheus.Gauge
	lag       *prometheus.GaugeVec
}

// NewCluster registers the cluster metrics on reg.
func NewCluster(reg prometheus.Registerer) *Cluster {
	c := &Cluster{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "canaryd_cluster_connected",
			Help: "1 while this member reaches etcd (its last read succeeded), else 0.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "canaryd_cluster_leader",
			Help: "1 on the member that runs the rollouts, 0 on the others.",
		}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "canaryd_cluster_members",
			Help: "Live members of the cluster as this member sees them (itself included).",
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "canaryd_cluster_state_lag_seconds",
			Help: "Seconds from the leader's write of a route's state to this member serving it; on the leader, to the last member's confirmation.",
		}, []string{"route"}),
	}
	reg.MustRegister(c.connected, c.leader, c.members, c.lag)
	return c
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Connected records whether etcd answers.
func (c *Cluster) Connected(ok bool) { c.connected.Set(b2f(ok)) }

// Leader records whether this member leads.
func (c *Cluster) Leader(ok bool) { c.leader.Set(b2f(ok)) }

// Members records the live members.
func (c *Cluster) Members(n int) { c.members.Set(float64(n)) }

// Lag records a route's state lag.
func (c *Cluster) Lag(route string, seconds float64) { c.lag.WithLabelValues(route).Set(seconds) }
