package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TLSCert is one served certificate, for the expiry gauge.
type TLSCert struct {
	Name     string
	NotAfter time.Time
}

// TLS exports the listener's certificates and the reloads of TLS files.
type TLS struct {
	expiry     *prometheus.GaugeVec
	reloads    *prometheus.CounterVec
	successful prometheus.Gauge
	refused    prometheus.Counter
	ocsp       *prometheus.CounterVec
}

// NewTLS registers the TLS and PROXY protocol metrics on reg.
func NewTLS(reg prometheus.Registerer) *TLS {
	t := &TLS{
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "canaryd_tls_certificate_expiry_timestamp_seconds",
			Help: "Unix time at which each certificate the listener serves expires, by its first DNS name (else common name). Alert well before it.",
		}, []string{"name"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_tls_reloads_total",
			Help: "Reloads of changed certificate, key and CA files (listener and pools) by result: applied, or failed (the previous material keeps serving).",
		}, []string{"result"}),
		successful: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "canaryd_tls_last_reload_successful",
			Help: "1 if every certificate, key and CA file as it stands is the one in use, 0 if the last reload of one failed.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "canaryd_proxy_protocol_refused_total",
			Help: "Client connections closed for their PROXY protocol header: sent by a peer not in trusted_proxies, malformed, or not sent in time.",
		}),
		ocsp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_tls_ocsp_fetches_total",
			Help: "Fetches of OCSP staples for the listener's certificates that name a responder, by result: stapled, or failed (the previous staple stays until its NextUpdate).",
		}, []string{"result"}),
	}
	reg.MustRegister(t.expiry, t.reloads, t.successful, t.refused, t.ocsp)
	t.reloads.WithLabelValues(string(ReloadApplied))
	t.reloads.WithLabelValues(string(ReloadFailed))
	t.successful.Set(1)
	return t
}

// OCSPFetched counts a fetch of an OCSP staple.
func (t *TLS) OCSPFetched(ok bool) {
	if ok {
		t.ocsp.WithLabelValues("stapled").Inc()
	} else {
		t.ocsp.WithLabelValues("failed").Inc()
	}
}

// Serving replaces the expiry series with the certificates served now.
func (t *TLS) Serving(certs []TLSCert) {
	t.expiry.Reset()
	for _, c := range certs {
		t.expiry.WithLabelValues(c.Name).Set(float64(c.NotAfter.Unix()))
	}
}

// Reloaded records a reload of TLS files: ok, or failed.
func (t *TLS) Reloaded(ok bool) {
	if ok {
		t.reloads.WithLabelValues(string(ReloadApplied)).Inc()
		t.successful.Set(1)
		return
	}
	t.reloads.WithLabelValues(string(ReloadFailed)).Inc()
	t.successful.Set(0)
}

// Failing marks the files as not in use without counting a reload (the
// same broken files seen again).
func (t *TLS) Failing() { t.successful.Set(0) }

// ProxyRefused counts a connection refused for its PROXY header.
func (t *TLS) ProxyRefused() { t.refused.Inc() }
