// Package cluster makes canaryd replicas act as one router on etcd v3:
// membership, the election of the one member that runs the rollouts,
// the leader's fenced state, members' acknowledgements, summable
// counters and operator commands, all under /canaryd/<name>/ (see
// docs/cluster.md). It is nothing but etcd's own primitives: leases,
// transactions, watches and the concurrency package's election.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"canaryd/config"
	"canaryd/evidence"
	"canaryd/panics"
	"canaryd/registry"
	"canaryd/rollout"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// Handler is what a member does with what the cluster tells it. Calls
// come from the cluster's goroutines, one at a time per kind, never with
// a cluster lock held.
type Handler interface {
	// Lead: this member won the election and its fenced writes work;
	// Follow: it lost the leadership, or resigned.
	Lead()
	Follow()
	// State is the leader's latest state of a route (on every member,
	// the leader too). The member serves it before State returns; the
	// cluster then acknowledges it.
	State(route string, data []byte)
	// Command runs an operator's command sent to any member (on the
	// leader only).
	Command(route string, action rollout.Action) error
	// Approve gives a person's go-ahead, sent to any member, to a
	// route's pending approval gate (on the leader only).
	Approve(route string, a rollout.Approval) error
	// Drift names the live members whose settings of a route differ
	// from the leader's; nil when they all agree (on the leader only).
	Drift(route string, members []string)
	// Settled: every live member confirmed the route's latest weights,
	// except those in late (which did not in time); on the leader only.
	Settled(route string, late []string)
	// Partitioned: this member was cut off from etcd for
	// partition_timeout (true), or it reaches etcd again (false).
	Partitioned(bool)
	// Stats are this member's cumulative counters of a route's pools since
	// it started.
	Stats(route string) []PoolStats
}

// Info describes this member to the others.
type Info struct {
	Addr    string `json:"addr"`
	Admin   string `json:"admin"`
	Version string `json:"version"`
	// ConfigHash is the hash of the member's routes; Routes has each
	// route's (config drift is judged route by route).
	ConfigHash string            `json:"config_hash"`
	Routes     map[string]string `json:"routes"`
}

// memberDoc is the value of members/<id>.
type memberDoc struct {
	Info
	Boot    string    `json:"boot"`
	Started time.Time `json:"started"`
}

// stateDoc is the value of state/<route>: the rollout state as the
// rollout package encodes it, and who wrote it when.
type stateDoc struct {
	By      string          `json:"by"`
	At      time.Time       `json:"at"`
	State   json.RawMessage `json:"state"`
	Weights bool            `json:"weights_changed,omitempty"`
}

// commandDoc is the value of commands/<route>/<id>.
type commandDoc struct {
	Action rollout.Action `json:"action"`
	// Approval is the go-ahead of an "approve" command.
	Approval *rollout.Approval `json:"approval,omitempty"`
	From     string            `json:"from"`
	Done     bool              `json:"done,omitempty"`
	Error    string            `json:"error,omitempty"`
}

// Metrics receives what the member exports (package metrics' Cluster:
// the canaryd_cluster_* series).
type Metrics interface {
	Connected(ok bool)
	Leader(ok bool)
	Members(n int)
	Lag(route string, seconds float64)
}

// Options configure a Cluster.
type Options struct {
	// Config is the cluster block, defaulted.
	Config config.Cluster
	// Member is this member's id (Config.Member or a generated one).
	Member string
	Info   Info
	// Handler gets what the cluster learns. Required.
	Handler Handler
	Log     *zap.Logger
	Metrics Metrics
	// Clock for tests; default time.Now.
	Now func() time.Time
	// OnPanic hears of a panic in the member's goroutines (default:
	// printed to stderr).
	OnPanic panics.Handler
}

// Timing. Members confirm weights within ackTimeout or the step's
// evidence starts without them; the leader checks its duties every
// dutyEvery; the counts of routes under way are flushed every flushBusy
// (those of the others are never needed).
const (
	ackTimeout  = 2 * time.Second
	dutyEvery   = 100 * time.Millisecond
	flushBusy   = time.Second
	probeEvery  = 500 * time.Millisecond
	opTimeout   = 2 * time.Second
	retryPause  = 300 * time.Millisecond
	commandWait = 10 * time.Second
)

// Cluster is this member's part in the cluster.
type Cluster struct {
	o      Options
	log    *zap.Logger
	cli    *clientv3.Client
	prefix string
	boot   string

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	// campaignCtx ends at Resign: no more campaigning.
	campaignCtx    context.Context
	stopCampaign   context.CancelFunc
	wg, campaignWG sync.WaitGroup
	deposed        chan struct{} // a fenced write failed (cap 1)
	ackNow         chan struct{} // states to acknowledge (cap 1)
	// onInstances gets the registrations (set before Start).
	onInstances func([]registry.Registration)

	// mu guards the fields below it.
	mu       sync.Mutex
	cmdSeq   uint64               // numbers this member's commands
	sess     *concurrency.Session // nil while none
	election *concurrency.Election
	leading  bool
	cache    *cache
	// connected: the last read of etcd succeeded; lastOK is when.
	connected   bool
	lastOK      time.Time
	partitioned bool
	// pending are the leader's writes waiting for acknowledgements.
	pending map[string]pendingAck
	// executed commands (key@revision), so one is run once.
	executed map[string]bool
	drift    map[string]string // route → members, as last reported
	info     Info
	history  history
	// applied is the state (revision) this member serves, by route;
	// toAck the routes whose acknowledgement ackLoop has to write.
	applied map[string]int64
	toAck   map[string]bool
	// endReports stops the leader's watch of the reports (nil while
	// following); reportsWG waits for it.
	endReports context.CancelFunc
	reportsWG  sync.WaitGroup

	rep reporter
}

type pendingAck struct {
	rev   int64
	since time.Time
}

// New connects lazily: etcd unreachable at start is a normal state (the
// member serves its file's weights and keeps trying).
func New(o Options) (*Cluster, error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		return nil, errors.New("cluster: Options.Metrics is required")
	}
	cc := clientv3.Config{
		Endpoints:            o.Config.Etcd.Endpoints,
		DialTimeout:          o.Config.Etcd.DialTimeout.D(),
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		// The client's own retries are logged at warn level many times a
		// second while etcd is away; this member's logs say it once.
		Logger: o.Log.Named("etcd").WithOptions(zap.IncreaseLevel(zap.ErrorLevel)),
		// Never RejectOldCluster: a 3.7 client then refuses a 3.4 server.
	}
	if t := o.Config.Etcd.TLS; t.Enabled() {
		tc, err := etcdTLS(t)
		if err != nil {
			return nil, err
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("cluster.etcd: %w", err)
	}
	var b [6]byte
	rand.Read(b[:])
	ctx, cancel := context.WithCancel(context.Background())
	cctx, ccancel := context.WithCancel(ctx)
	c := &Cluster{
		o: o, log: o.Log, cli: cli, prefix: "/canaryd/" + o.Config.Name + "/", boot: hex.EncodeToString(b[:]),
		ctx: ctx, cancel: cancel, campaignCtx: cctx, stopCampaign: ccancel,
		deposed: make(chan struct{}, 1), cache: newCache(o.Member), pending: map[string]pendingAck{},
		executed: map[string]bool{}, drift: map[string]string{}, info: o.Info, history: history{},
		applied: map[string]int64{}, toAck: map[string]bool{}, ackNow: make(chan struct{}, 1),
	}
	return c, nil
}

func etcdTLS(t config.ClusterTLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.etcd.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster.etcd.tls.ca_file %s has no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.etcd.tls: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// Member is this member's id.
func (c *Cluster) Member() string { return c.o.Member }

// Start runs the member: the watch of the cluster's keys, the session
// and the campaign, the flushes and probes.
func (c *Cluster) Start() {
	c.wg.Add(5)
	h := c.o.OnPanic
	go func() { defer c.wg.Done(); panics.Guard(h, "cluster acknowledgements", c.ackLoop) }()
	go func() { defer c.wg.Done(); panics.Guard(h, "cluster history", c.historyLoop) }()
	go func() { defer c.wg.Done(); panics.Guard(h, "cluster watch", c.watchLoop) }()
	go func() { defer c.wg.Done(); panics.Guard(h, "cluster probe", c.probeLoop) }()
	go func() { defer c.wg.Done(); panics.Guard(h, "cluster duties", c.dutyLoop) }()
	c.campaignWG.Add(1)
	go func() { defer c.campaignWG.Done(); panics.Guard(h, "cluster session", c.sessionLoop) }()
}

// Resign ends this member's part in the election, for a process about to
// drain: a leader resigns at once (another member leads within moments,
// not a session_ttl), and its session's keys go. The watch goes on, so
// the drain serves the cluster's weights.
func (c *Cluster) Resign() {
	c.stopCampaign()
	c.campaignWG.Wait()
}

// Close stops everything (after Resign).
func (c *Cluster) Close() {
	c.Resign()
	c.cancel()
	c.wg.Wait()
	c.cli.Close()
}

func (c *Cluster) key(parts ...string) string {
	k := c.prefix
	for i, p := range parts {
		if i > 0 {
			k += "/"
		}
		k += p
	}
	return k
}

// sessionLoop keeps a session (a lease that holds this member's keys),
// the member key on it, and a campaign for leadership.
func (c *Cluster) sessionLoop() {
	ctx := c.campaignCtx
	for ctx.Err() == nil {
		// The lease is granted under a timeout (the client would wait for
		// etcd as long as it is away, and a resignation with it); the
		// session then lives until Close, so that resigning can still
		// revoke it.
		ttl := int(c.o.Config.SessionTTL.D() / time.Second)
		gctx, gcancel := context.WithTimeout(ctx, opTimeout)
		lease, err := c.cli.Grant(gctx, int64(ttl))
		gcancel()
		if err != nil {
			pause(ctx, retryPause)
			continue
		}
		sess, err := concurrency.NewSession(c.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(ttl), concurrency.WithContext(c.ctx))
		if err != nil {
			pause(ctx, retryPause)
			continue
		}
		c.mu.Lock()
		c.sess = sess
		c.mu.Unlock()
		if err := c.putMember(ctx, sess); err != nil {
			c.dropSession(sess, false)
			pause(ctx, retryPause)
			continue
		}
		el := concurrency.NewElection(sess, c.key("election")+"/")
		cctx, cancel := context.WithCancel(ctx)
		won := make(chan error, 1)
		go func() {
			defer panics.Recover(c.o.OnPanic, "cluster campaign")
			won <- el.Campaign(cctx, c.o.Member)
		}()
		select {
		case err := <-won:
			if err != nil {
				cancel()
				c.dropSession(sess, true)
				continue
			}
			if !c.lead(el, sess) {
				cancel()
				c.dropSession(sess, true)
				continue
			}
			select {
			case <-sess.Done():
				c.log.Warn("cluster session lost; no longer the leader", zap.String("member", c.o.Member))
			case <-c.deposed:
				c.log.Warn("deposed: a fenced write failed; no longer the leader", zap.String("member", c.o.Member))
			case <-ctx.Done():
			}
			c.unlead()
			if ctx.Err() != nil {
				rctx, rcancel := context.WithTimeout(c.ctx, opTimeout)
				if err := el.Resign(rctx); err != nil {
					c.log.Warn("resigning the leadership failed; the others take over when the session expires", zap.Error(err))
				}
				rcancel()
			}
		case <-sess.Done():
		case <-ctx.Done():
		}
		cancel()
		c.dropSession(sess, ctx.Err() != nil)
	}
}

// dropSession forgets a session; revoke ends its lease at once (this
// member's keys go now, not at the TTL).
func (c *Cluster) dropSession(sess *concurrency.Session, revoke bool) {
	c.mu.Lock()
	if c.sess == sess {
		c.sess = nil
	}
	c.mu.Unlock()
	if revoke {
		sess.Close()
	} else {
		sess.Orphan()
	}
}

func (c *Cluster) putMember(ctx context.Context, sess *concurrency.Session) error {
	c.mu.Lock()
	doc := memberDoc{Info: c.info, Boot: c.boot, Started: c.o.Now()}
	c.mu.Unlock()
	b, _ := json.Marshal(doc)
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := c.cli.Put(octx, c.key("members", c.o.Member), string(b), clientv3.WithLease(sess.Lease()))
	return err
}

// SetInfo updates what the others see of this member (a reload changed
// its routes).
func (c *Cluster) SetInfo(info Info) {
	c.mu.Lock()
	c.info = info
	sess := c.sess
	c.mu.Unlock()
	if sess != nil {
		if err := c.putMember(c.ctx, sess); err != nil {
			c.log.Warn("cannot publish this member's new config hash; the next session will", zap.Error(err))
		}
	}
}

// lead starts this member's leadership; false when the session ended
// before it could read the reports (then it does not lead).
func (c *Cluster) lead(el *concurrency.Election, sess *concurrency.Session) bool {
	// Read the states as they are now: the old leader's last writes may
	// not have reached this member's watch yet.
	octx, cancel := context.WithTimeout(c.ctx, opTimeout)
	resp, err := c.cli.Get(octx, c.key("state")+"/", clientv3.WithPrefix())
	cancel()
	c.mu.Lock()
	if err == nil {
		for _, kv := range resp.Kvs {
			c.cache.putState(c.prefix, kv)
		}
	}
	c.mu.Unlock()
	// The reports must be read before the controllers start: a member's
	// counts that reached the sums after a step's evidence began would
	// count its whole series as that step's.
	rev, ok := c.loadReports(sess)
	if !ok {
		return false
	}
	c.rep.forget()
	rctx, rcancel := context.WithCancel(c.ctx)
	c.mu.Lock()
	c.election, c.leading = el, true
	c.pending = map[string]pendingAck{}
	c.drift = map[string]string{}
	c.endReports = rcancel
	clear(c.history) // its samples are now the sums of another reader
	c.mu.Unlock()
	c.reportsWG.Add(1)
	go func() {
		defer c.reportsWG.Done()
		panics.Guard(c.o.OnPanic, "cluster reports", func() { c.reportsLoop(rctx, rev) })
	}()
	select {
	case <-c.deposed:
	default:
	}
	c.o.Metrics.Leader(true)
	c.log.Info("cluster leader: this member runs the rollouts", zap.String("member", c.o.Member), zap.Int64("election_revision", el.Rev()))
	c.o.Handler.Lead()
	return true
}

// loadReports reads the reports into the cache, retrying until it
// works or the session ends; it returns the read's revision.
func (c *Cluster) loadReports(sess *concurrency.Session) (int64, bool) {
	r := c.reportsRange()
	for {
		gctx, cancel := context.WithTimeout(c.ctx, opTimeout)
		resp, err := c.cli.Get(gctx, r.from, clientv3.WithRange(r.to))
		cancel()
		if err == nil {
			c.mu.Lock()
			c.cache.loadReports(c.prefix, resp.Kvs)
			c.mu.Unlock()
			return resp.Header.Revision + 1, true
		}
		select {
		case <-sess.Done():
			return 0, false
		case <-c.campaignCtx.Done():
			return 0, false
		case <-time.After(retryPause):
		}
	}
}

func (c *Cluster) unlead() {
	c.mu.Lock()
	c.leading, c.election = false, nil
	end := c.endReports
	c.endReports = nil
	c.mu.Unlock()
	if end != nil {
		end()
		c.reportsWG.Wait()
	}
	c.mu.Lock()
	c.cache.dropReports()
	clear(c.history)
	c.mu.Unlock()
	c.o.Metrics.Leader(false)
	c.o.Handler.Follow()
	c.log.Info("cluster follower: this member serves the leader's weights", zap.String("member", c.o.Member))
}

// Leading reports whether this member leads.
func (c *Cluster) Leading() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leading
}

// ErrFenced is SaveState's error when this member is not the leader, or
// lost the leadership: nothing was written.
var ErrFenced = errors.New("not the cluster's leader: the write was fenced off")

// SaveState writes a route's state, only while this member's leadership
// holds (a transaction guarded by its election key's revision: a deposed
// leader's late write fails). weights says whether the state moves
// traffic; the members' acknowledgements of it are then awaited.
func (c *Cluster) SaveState(route string, state []byte, weights bool) error {
	c.mu.Lock()
	el := c.election
	c.mu.Unlock()
	if el == nil {
		return ErrFenced
	}
	b, _ := json.Marshal(stateDoc{By: c.o.Member, At: c.o.Now(), State: state, Weights: weights})
	ctx, cancel := context.WithTimeout(c.ctx, opTimeout)
	defer cancel()
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())).
		Then(clientv3.OpPut(c.key("state", route), string(b))).
		Commit()
	if err != nil {
		// Unknown outcome (etcd away or without quorum): the decision is
		// not served. A leader that cannot write loses its session soon.
		return fmt.Errorf("%w (%v)", ErrFenced, err)
	}
	if !resp.Succeeded {
		select {
		case c.deposed <- struct{}{}:
		default:
		}
		return ErrFenced
	}
	c.mu.Lock()
	c.cache.setState(route, state, resp.Header.Revision, c.o.Now())
	if weights {
		c.pending[route] = pendingAck{rev: resp.Header.Revision, since: c.o.Now()}
	}
	c.mu.Unlock()
	return nil
}

// LoadState is a route's latest state as this member knows it; nil when
// none.
func (c *Cluster) LoadState(route string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.cache.states[route]; ok {
		return s.data
	}
	return nil
}

// DeleteState forgets a route's state (fenced, as SaveState).
func (c *Cluster) DeleteState(route string) error {
	c.mu.Lock()
	el := c.election
	c.mu.Unlock()
	if el == nil {
		return ErrFenced
	}
	ctx, cancel := context.WithTimeout(c.ctx, opTimeout)
	defer cancel()
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())).
		Then(clientv3.OpDelete(c.key("state", route))).Commit()
	if err != nil || !resp.Succeeded {
		return ErrFenced
	}
	return nil
}

// Traffic is the cluster's cumulative counts of a pool: every other
// member's last flush (those gone included, so the sums never go back),
// plus local, this member's own live counts.
func (c *Cluster) Traffic(route, pool string, local evidence.Traffic) evidence.Traffic {
	c.mu.Lock()
	defer c.mu.Unlock()
	local.Add(c.cache.sum(c.o.Member, route, pool).Traffic)
	return local
}

// Shadow is Traffic's sum for a route's copies to a pool.
func (c *Cluster) Shadow(route, pool string, local evidence.Shadow) evidence.Shadow {
	c.mu.Lock()
	defer c.mu.Unlock()
	local.Add(c.cache.sum(c.o.Member, route, pool).Shadow)
	return local
}

// Command sends an operator's command to the leader and waits for it to
// run (up to ctx's end, at most commandWait). It returns the leader's
// error, if any.
func (c *Cluster) Command(ctx context.Context, route string, action rollout.Action) error {
	return c.send(ctx, route, commandDoc{Action: action, From: c.o.Member})
}

// approveAction is the command an approval travels as.
const approveAction rollout.Action = "approve"

// Approve sends a person's go-ahead to the leader and waits for it to be
// taken, as Command does.
func (c *Cluster) Approve(ctx context.Context, route string, a rollout.Approval) error {
	return c.send(ctx, route, commandDoc{Action: approveAction, Approval: &a, From: c.o.Member})
}

// send puts a command for the leader and waits for its answer.
func (c *Cluster) send(ctx context.Context, route string, doc commandDoc) error {
	c.mu.Lock()
	sess := c.sess
	c.cmdSeq++
	key := c.key("commands", route, fmt.Sprintf("%s.%s.%d", c.o.Member, c.boot, c.cmdSeq))
	c.mu.Unlock()
	if sess == nil {
		return errors.New("this member is not connected to the cluster's etcd; send the command to another member, or retry when it reconnects")
	}
	ctx, cancel := context.WithTimeout(ctx, commandWait)
	defer cancel()
	b, _ := json.Marshal(doc)
	// Bound to this member's session: a command whose sender died goes
	// with it.
	if _, err := c.cli.Put(ctx, key, string(b), clientv3.WithLease(sess.Lease())); err != nil {
		return fmt.Errorf("sending the command to the cluster: %w", err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(c.ctx, opTimeout)
		c.cli.Delete(dctx, key)
		dcancel()
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	// Only the leader watches the commands: the sender reads its own.
	for {
		if resp, err := c.cli.Get(ctx, key); err == nil && len(resp.Kvs) == 1 {
			var d commandDoc
			if json.Unmarshal(resp.Kvs[0].Value, &d) == nil && d.Done {
				if d.Error != "" {
					return errors.New(d.Error)
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the cluster's leader did not run the command within %v (is there a leader? see GET /api/v1/cluster): %w", commandWait, ctx.Err())
		case <-tick.C:
		}
	}
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
