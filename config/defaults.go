package config

import (
	"time"

	"canaryd/upstream"
)

// Rollout defaults (rollout.*).
const (
	DefaultRolloutStep                 Percent = 1000 // linear: 10% a step
	DefaultRolloutInterval                     = 30 * time.Second
	DefaultMinRequests                         = 200
	DefaultFailureLimit                        = 2
	DefaultMaxInconclusive                     = 10
	DefaultMaxGathering                        = 200
	DefaultConfidence                          = 0.95
	DefaultTripwireMinRequests                 = 20
	DefaultTripwireMaxErrorRate                = 0.5
	DefaultCompareConfidence                   = 0.99
	DefaultCompareMaxRatio                     = 1.5
	DefaultCompareMinDifference                = 0.005
	DefaultCompareMinLatencyDifference         = 10 * time.Millisecond
	DefaultPromTimeout                         = 5 * time.Second
	DefaultWebhookTimeout                      = 5 * time.Second
	DefaultWebhookRetries                      = 3
	DefaultRollbackInterval                    = 10 * time.Second
	DefaultShadowPercent               Percent = 1000
	DefaultShadowMaxMismatchRate               = 0.05
	DefaultMirrorQueue                         = 256
	DefaultMirrorConcurrency                   = 16
	DefaultMirrorTimeout                       = 10 * time.Second
	DefaultCompareMaxBytes                     = 1 << 20
)

// DefaultRolloutSteps are a canary's steps: 1, 5, 25, 50, 100% (a new
// slice at every call: no package state).
func DefaultRolloutSteps() []Percent { return []Percent{100, 500, 2500, 5000, Full} }

// Defaults, in one place. docs/config.md repeats them; keep both in step.
const (
	DefaultListen            = ":8080"
	DefaultAdminListen       = "127.0.0.1:9901"
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultDrainTimeout      = 30 * time.Second
	// Overload defaults (server.*, upstream.request_buffering).
	DefaultRequestBodyTimeout  = 60 * time.Second
	DefaultClientWriteTimeout  = 60 * time.Second
	DefaultBodyRateGrace       = 10 * time.Second
	DefaultRequestBufferBytes  = 64 << 10
	MaxRequestBufferBytes      = 16 << 20
	DefaultTicketRotation      = 12 * time.Hour
	MinTicketRotation          = time.Second
	DefaultH2MaxReadFrameLimit = 1 << 20
	// The upstream block's defaults are package upstream's (one home:
	// the proxy's zero values are the same constants).
	DefaultDialTimeout            = upstream.DefaultDialTimeout
	DefaultResponseHeaderTimeout  = upstream.DefaultResponseHeaderTimeout
	DefaultMaxIdleConnsPerHost    = upstream.DefaultMaxIdleConnsPerHost
	DefaultIdleConnTimeout        = upstream.DefaultIdleConnTimeout
	DefaultMaxResponseHeaderBytes = upstream.DefaultMaxResponseHeaderBytes
	// MaxResponseHeaderBytesLimit is the largest max_response_header_bytes:
	// a head is held in memory whole while it is read.
	MaxResponseHeaderBytesLimit = 1 << 20
	DefaultReloadDebounce       = 100 * time.Millisecond
	DefaultReloadPollInterval   = 30 * time.Second
	DefaultProbeInterval        = 5 * time.Second
	DefaultProbeTimeout         = 2 * time.Second
	DefaultRise                 = 2
	DefaultFall                 = 3
	DefaultExpectedStatus       = "200-399"
	DefaultJitterPercent        = 10
	DefaultConsecutiveFailures  = 5
	DefaultEjectFor             = 30 * time.Second
	DefaultMaxEjectFor          = 5 * time.Minute
	DefaultMaxEjectedPercent    = 50
	DefaultPanicThreshold       = 50
	DefaultTripwireWindow       = 10 * time.Second
	DefaultForceSecretHeader    = "X-Canary-Secret"
	DefaultShadowHeader         = "X-Canary-Shadow"
	// TripwireResolution is how often the tripwire reads the counters;
	// MinTripwireWindow is the shortest window it can honour.
	TripwireResolution             = time.Second
	MinTripwireWindow              = time.Second
	DefaultH2MaxConcurrentStreams  = 100
	DefaultH2StreamBuffer          = 256 << 10
	DefaultH2ConnBuffer            = 1 << 20
	DefaultH2PingTimeout           = 15 * time.Second
	DefaultH2WriteByteTimeout      = 30 * time.Second
	DefaultTLSMinVersion           = "1.2"
	DefaultDiscoveryInterval       = 5 * time.Second
	DefaultDiscoveryEmptyAfter     = 3
	DefaultDiscoveryMaxDropPercent = 50
	// AdminOff disables the admin listener.
	AdminOff = "off"
	// MaxPools bounds pools per route (the schedule stores a byte per slot).
	MaxPools = 255
)

func (c *Config) applyDefaults() {
	setStr(&c.Listen, DefaultListen)
	setStr(&c.Admin.Listen, DefaultAdminListen)
	setStr(&c.StateDir, "./state")
	setDur(&c.Server.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDur(&c.Server.IdleTimeout, DefaultIdleTimeout)
	setInt(&c.Server.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDur(&c.Server.DrainTimeout, DefaultDrainTimeout)
	setDur(&c.Server.RequestBodyTimeout, DefaultRequestBodyTimeout)
	setDur(&c.Server.ClientWriteTimeout, DefaultClientWriteTimeout)
	if c.Server.MinRequestBodyRate.BytesPerSecond > 0 {
		setDur(&c.Server.MinRequestBodyRate.Grace, DefaultBodyRateGrace)
	}
	if c.Upstream.RequestBuffering.MaxBytes == nil {
		n := int64(DefaultRequestBufferBytes)
		c.Upstream.RequestBuffering.MaxBytes = &n
	}
	setDur(&c.TLS.SessionTicketRotation, DefaultTicketRotation)
	setBoolPtr(&c.TLS.OCSPStapling, true)
	setDur(&c.Upstream.DialTimeout, DefaultDialTimeout)
	setDur(&c.Upstream.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	setInt(&c.Upstream.MaxIdleConnsPerHost, DefaultMaxIdleConnsPerHost)
	setDur(&c.Upstream.IdleConnTimeout, DefaultIdleConnTimeout)
	if c.Upstream.MaxResponseHeaderBytes == 0 {
		c.Upstream.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
	}
	setBoolPtr(&c.Upstream.FastPath, true)
	h2 := &c.Server.HTTP2
	setInt(&h2.MaxConcurrentStreams, DefaultH2MaxConcurrentStreams)
	setInt(&h2.MaxReceiveBufferPerStream, DefaultH2StreamBuffer)
	setInt(&h2.MaxReceiveBufferPerConnection, DefaultH2ConnBuffer)
	setDur(&h2.PingTimeout, DefaultH2PingTimeout)
	setDur(&h2.WriteByteTimeout, DefaultH2WriteByteTimeout)
	setInt(&h2.MaxReadFrameSize, min(DefaultH2MaxReadFrameLimit, h2.MaxReceiveBufferPerStream))
	setStr(&c.TLS.MinVersion, DefaultTLSMinVersion)
	if c.TLS.ClientCAFile != "" {
		setStr(&c.TLS.ClientAuth, ClientAuthRequire)
	}
	if len(c.GRPC.ErrorCodes) == 0 {
		c.GRPC.ErrorCodes = []string{"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
	}
	setInt(&c.AccessLog.Sample, 1)
	setDur(&c.Reload.Debounce, DefaultReloadDebounce)
	setDur(&c.Reload.PollInterval, DefaultReloadPollInterval)
	if c.Cluster != nil {
		c.Cluster.applyDefaults()
	}
	for i := range c.Routes {
		c.Routes[i].applyDefaults()
	}
}

// applyDefaults fills a route's defaults (the main file's routes and an
// included file's alike).
func (r *Route) applyDefaults() {
	{
		setStr(&r.Match.PathPrefix, "/")
		setStr(&r.Balance, BalanceRoundRobin)
		setStr(&r.Force.SecretHeader, DefaultForceSecretHeader)
		if r.Sticky.Set {
			if r.Sticky.TTL == nil {
				d := DefaultAffinityTTL
				r.Sticky.TTL = &d
			}
			setStr(&r.Sticky.Secure, SecureAuto)
			setStr(&r.Sticky.SameSite, SameSiteLax)
			setStr(&r.Sticky.Path, "/")
		}
		if m := r.Mirror; m != nil {
			if m.Percent == 0 {
				m.Percent = Full
			}
			m.Options.applyDefaults()
		}
		r.Health.applyDefaults()
		if r.Rollout != nil {
			r.Rollout.applyDefaults()
		}
		for j := range r.Pools {
			if r.Pools[j].Protocol == "" {
				r.Pools[j].Protocol = upstream.HTTP1
			}
			if h := r.Pools[j].Health; h != nil {
				h.applyDefaults()
			}
			if d := r.Pools[j].Discovery; d != nil {
				setDur(&d.Interval, DefaultDiscoveryInterval)
				setInt(&d.EmptyAfter, DefaultDiscoveryEmptyAfter)
				setInt(&d.MaxDropPercent, DefaultDiscoveryMaxDropPercent)
				if d.Scheme == "" {
					d.Scheme = "http"
					if r.Pools[j].TLS != nil {
						d.Scheme = "https"
					}
				}
			}
		}
	}
}

func (o *ShadowOptions) applyDefaults() {
	if len(o.Methods) == 0 {
		o.Methods = []string{"GET", "HEAD", "OPTIONS"}
	}
	setStr(&o.Header, DefaultShadowHeader)
	setInt(&o.Queue, DefaultMirrorQueue)
	setInt(&o.Concurrency, DefaultMirrorConcurrency)
	setDur(&o.Timeout, DefaultMirrorTimeout)
	if len(o.Compare) == 0 {
		o.Compare = []string{CompareStatus}
	}
	if o.CompareMaxBytes == 0 {
		o.CompareMaxBytes = DefaultCompareMaxBytes
	}
	if o.IgnoreHeaders == nil {
		o.IgnoreHeaders = []string{"Date", "Server", "Age", "Expires", "Last-Modified", "Etag", "Set-Cookie", "X-Request-Id",
			"Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive"}
	}
}

func (h *Health) applyDefaults() {
	a := &h.Active
	setDur(&a.Interval, DefaultProbeInterval)
	setDur(&a.UnhealthyInterval, a.Interval.D())
	// The default timeout fits the intervals given: 2s, or half the
	// shorter interval when that is less (interval: 2s alone was refused,
	// its default timeout not shorter than it).
	setDur(&a.Timeout, min(DefaultProbeTimeout, a.Interval.D()/2, a.UnhealthyInterval.D()))
	setInt(&a.Rise, DefaultRise)
	setInt(&a.Fall, DefaultFall)
	setStr(&a.ExpectedStatus, DefaultExpectedStatus)
	setIntPtr(&a.Jitter, DefaultJitterPercent)
	p := &h.Passive
	setIntPtr(&p.ConsecutiveFailures, DefaultConsecutiveFailures)
	setDur(&p.EjectFor, DefaultEjectFor)
	setDur(&p.MaxEjectFor, DefaultMaxEjectFor)
	setIntPtr(&p.MaxEjectedPercent, DefaultMaxEjectedPercent)
	setIntPtr(&h.PanicThreshold, DefaultPanicThreshold)
}

func (ro *Rollout) applyDefaults() {
	setStr(&ro.Strategy, StrategyCanary)
	fromStep := ro.Step != 0 || ro.Strategy == StrategyLinear
	if ro.Step == 0 {
		ro.Step = DefaultRolloutStep
	}
	if ro.Max == 0 {
		ro.Max = Full
	}
	if len(ro.Steps) == 0 {
		switch {
		case ro.Strategy == StrategyBlueGreen:
			ro.Steps = []Percent{0, Full}
		case fromStep && ro.Step > 0:
			for w := ro.Step; w < ro.Max && w < Full; w += ro.Step {
				ro.Steps = append(ro.Steps, w)
			}
			if ro.Max < Full {
				ro.Steps = append(ro.Steps, ro.Max)
			}
			ro.Steps = append(ro.Steps, Full)
		default:
			ro.Steps = DefaultRolloutSteps()
		}
	}
	setDur(&ro.Interval, DefaultRolloutInterval)
	setInt(&ro.MinRequests, DefaultMinRequests)
	setInt(&ro.FailureLimit, DefaultFailureLimit)
	setInt(&ro.MaxInconclusive, DefaultMaxInconclusive)
	setInt(&ro.MaxGathering, DefaultMaxGathering)
	if ro.Analysis.Confidence == 0 {
		ro.Analysis.Confidence = DefaultConfidence
	}
	setDur(&ro.Tripwire.Window, DefaultTripwireWindow)
	setInt(&ro.Tripwire.MinRequests, DefaultTripwireMinRequests)
	if ro.Tripwire.MaxErrorRate == 0 {
		ro.Tripwire.MaxErrorRate = DefaultTripwireMaxErrorRate
	}
	if c := ro.Analysis.CompareToStable; c != nil {
		if c.Confidence == 0 {
			c.Confidence = DefaultCompareConfidence
		}
		if c.MaxRatio == 0 {
			c.MaxRatio = DefaultCompareMaxRatio
		}
		if c.MinDifference == nil {
			d := DefaultCompareMinDifference
			c.MinDifference = &d
		}
		setDur(&c.MinLatencyDifference, DefaultCompareMinLatencyDifference)
	}
	if p := ro.Analysis.Prometheus; p != nil {
		setDur(&p.Timeout, DefaultPromTimeout)
	}
	for i := range ro.Analysis.HTTP {
		ro.Analysis.HTTP[i].applyDefaults()
	}
	for i := range ro.Gates {
		ro.Gates[i].applyDefaults()
	}
	for i := range ro.Notify {
		ro.Notify[i].applyDefaults()
	}
	setStr(&ro.Rollback.Mode, RollbackInstant)
	if len(ro.Rollback.Steps) == 0 {
		ro.Rollback.Steps = []Percent{5000, 2000, 0}
	}
	setDur(&ro.Rollback.Interval, DefaultRollbackInterval)
	setDur(&ro.Webhook.Timeout, DefaultWebhookTimeout)
	setIntPtr(&ro.Webhook.Retries, DefaultWebhookRetries)
	if sh := ro.Shadow; sh != nil {
		if sh.Percent == 0 {
			sh.Percent = DefaultShadowPercent
		}
		setInt(&sh.MinRequests, ro.MinRequests)
		if sh.MaxMismatchRate == nil {
			d := DefaultShadowMaxMismatchRate
			sh.MaxMismatchRate = &d
		}
		sh.Options.applyDefaults()
	}
}

func setIntPtr(p **int, d int) {
	if *p == nil {
		*p = &d
	}
}

func setBoolPtr(p **bool, d bool) {
	if *p == nil {
		*p = &d
	}
}

func setStr(p *string, d string) {
	if *p == "" {
		*p = d
	}
}

func setDur(p *Duration, d time.Duration) {
	if *p == 0 {
		*p = Duration(d)
	}
}

func setInt(p *int, d int) {
	if *p == 0 {
		*p = d
	}
}

// Affinity cookie defaults and values (sticky.set).
const (
	DefaultAffinityTTL = Duration(24 * time.Hour)
	SecureAuto         = "auto"
	SecureAlways       = "always"
	SecureNever        = "never"
	SameSiteLax        = "lax"
	SameSiteStrict     = "strict"
	SameSiteNone       = "none"
)
