package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"canaryd/admin"
	"canaryd/cluster"
	"canaryd/config"
	"canaryd/evidence"
	"canaryd/metrics"
	"canaryd/rollout"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Cluster mode wiring: the cluster package talks to etcd; here its news
// become rollout and weight changes, and the rollouts' states and counts
// go to it.

// memberID is the member id a cluster block gives, or the default: the
// host name with a random suffix (new at every start, so a restarted
// replica is a new member and its old keys expire with its old lease).
func memberID(c *config.Cluster) string {
	if c.Member != "" {
		return c.Member
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "canaryd"
	}
	var b [3]byte
	rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// setupCluster creates the cluster member of a config with a cluster
// block; the rollouts then follow until this member is elected.
func (s *Server) setupCluster(cfg *config.Config, reg prometheus.Registerer) error {
	if cfg.Cluster == nil {
		return nil
	}
	member := memberID(cfg.Cluster)
	c, err := cluster.New(cluster.Options{
		Config: *cfg.Cluster, Member: member, Handler: clusterEvents{s},
		Log: s.log.Named("cluster"), Metrics: metrics.NewCluster(reg), OnPanic: s.panicked,
	})
	if err != nil {
		return err
	}
	s.cluster = c
	return nil
}

// clusterInfo is what the other members see of this one.
func (s *Server) clusterInfo(cfg *config.Config) cluster.Info {
	info := cluster.Info{Version: s.opts.Version, ConfigHash: cfg.RoutesHash(), Routes: map[string]string{}}
	for _, r := range cfg.Routes {
		info.Routes[r.Name] = r.Hash()
	}
	if s.proxyLn != nil {
		info.Addr = s.proxyLn.Addr().String()
	}
	if cfg.Cluster.Advertise != "" {
		info.Addr = cfg.Cluster.Advertise
	}
	if s.adminLn != nil {
		info.Admin = s.adminLn.Addr().String()
	}
	return info
}

// clusterViewFunc serves GET /api/v1/cluster; nil without a cluster.
func (s *Server) clusterViewFunc() func() admin.ClusterView {
	if s.cluster == nil {
		return nil
	}
	return s.clusterView
}

// clusterView is GET /api/v1/cluster.
func (s *Server) clusterView() admin.ClusterView {
	v := s.cluster.View()
	out := admin.ClusterView{Name: v.Name, Member: v.Member, Leader: v.Leader, Connected: v.Connected,
		Partitioned: v.Partitioned, States: v.States, Members: []admin.ClusterMemberView{}}
	for _, m := range v.Members {
		out.Members = append(out.Members, admin.ClusterMemberView{ID: m.ID, Addr: m.Addr, Admin: m.Admin,
			Version: m.Version, ConfigHash: m.ConfigHash, Acked: m.Acked})
	}
	return out
}

// clusterEvents is the cluster's Handler.
type clusterEvents struct{ s *Server }

func (e clusterEvents) Lead()   { e.s.rollouts.Lead(e.s.cluster.Member()) }
func (e clusterEvents) Follow() { e.s.rollouts.Follow() }

func (e clusterEvents) State(route string, data []byte) {
	var st rollout.State
	if err := json.Unmarshal(data, &st); err != nil {
		e.s.log.Error("the cluster's rollout state is unreadable; keeping the weights served", zap.String("route", route), zap.Error(err))
		return
	}
	e.s.rollouts.Adopt(st)
}

func (e clusterEvents) Command(route string, action rollout.Action) error {
	_, err := e.s.rollouts.Control(route, action)
	return err
}

func (e clusterEvents) Approve(route string, a rollout.Approval) error {
	_, err := e.s.rollouts.Approve(route, a)
	return err
}

func (e clusterEvents) Drift(route string, members []string) { e.s.rollouts.Drift(route, members) }

func (e clusterEvents) Settled(route string, late []string) {
	e.s.rollouts.RestartEvidence(route, strings.Join(late, ", "))
}

// Partitioned: with on_partition stable, routes whose rollout is under way
// go to their stable pool on this member (toward stable is always allowed
// locally); back in touch, the cluster's state serves again.
func (e clusterEvents) Partitioned(p bool) {
	s := e.s
	if s.static.Cluster.OnPartition != config.OnPartitionStable {
		if p {
			s.log.Warn("cut off from the cluster for partition_timeout; on_partition is hold: serving the last weights")
		}
		return
	}
	s.pipe.setPartitioned(p)
}

func (e clusterEvents) Stats(route string) []cluster.PoolStats {
	r := e.s.router.Load().Route(route)
	if r == nil {
		return nil
	}
	out := make([]cluster.PoolStats, 0, len(r.Pools))
	for _, p := range r.Pools {
		out = append(out, cluster.PoolStats{Route: r.Name, Pool: p.Name,
			Traffic: e.s.PoolTraffic(r.Name, p.Name), Shadow: e.s.ShadowTraffic(r.Name, p.Name)})
	}
	return out
}

// clusterStore keeps rollout states in etcd, written by the leader only.
type clusterStore struct {
	c *cluster.Cluster
	// last is each route's last saved weights, to tell a write that moves
	// traffic (whose acknowledgements restart the step's evidence).
	mu   sync.Mutex
	last map[string][2]int
}

func (cs *clusterStore) Load(route string) (*rollout.State, error) {
	data := cs.c.LoadState(route)
	if data == nil {
		return nil, nil
	}
	var st rollout.State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("the cluster's state of route %s is unreadable (%v); abort and resume the rollout to write a new one", route, err)
	}
	return &st, nil
}

func (cs *clusterStore) Save(st *rollout.State) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	shadow := 0
	if st.Shadow {
		shadow = 1
	}
	w := [2]int{st.Weight, shadow}
	cs.mu.Lock()
	moved := cs.last[st.Route] != w
	cs.mu.Unlock()
	if err := cs.c.SaveState(st.Route, data, moved); err != nil {
		if errors.Is(err, cluster.ErrFenced) {
			return fmt.Errorf("%w: %v", rollout.ErrNotLeader, err)
		}
		return err
	}
	cs.mu.Lock()
	cs.last[st.Route] = w
	cs.mu.Unlock()
	return nil
}

func (cs *clusterStore) Remove(route string) error {
	cs.mu.Lock()
	delete(cs.last, route)
	cs.mu.Unlock()
	return cs.c.DeleteState(route)
}

// clusterCounts are the leader's evidence: every member's counts summed.
type clusterCounts struct{ s *Server }

func (cc clusterCounts) PoolTraffic(route, pool string) evidence.Traffic {
	return cc.s.cluster.Traffic(route, pool, cc.s.PoolTraffic(route, pool))
}

func (cc clusterCounts) ShadowTraffic(route, pool string) evidence.Shadow {
	return cc.s.cluster.Shadow(route, pool, cc.s.ShadowTraffic(route, pool))
}

// clusterApprove takes an approval: here on the leader, else through
// etcd on the leader.
func (s *Server) clusterApprove(route string, a rollout.Approval) (rollout.Status, error) {
	if s.rollouts.Leading() {
		return s.rollouts.Approve(route, a)
	}
	err := s.cluster.Approve(context.Background(), route, a)
	st, serr := s.rollouts.Status(route)
	if serr != nil {
		return st, serr
	}
	return st, err
}

// clusterControl runs an operator's command: here on the leader, else
// through etcd on the leader.
func (s *Server) clusterControl(route string, action rollout.Action) (rollout.Status, error) {
	if s.rollouts.Leading() {
		return s.rollouts.Control(route, action)
	}
	err := s.cluster.Command(context.Background(), route, action)
	st, serr := s.rollouts.Status(route)
	if serr != nil {
		return st, serr
	}
	return st, err
}
