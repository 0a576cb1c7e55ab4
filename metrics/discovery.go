package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Discovery is DNS discovery's metrics (discovery.Metrics).
type Discovery struct {
	resolutions *prometheus.CounterVec
	instances   *prometheus.GaugeVec
	success     *prometheus.GaugeVec
}

// NewDiscovery registers the discovery metrics on reg.
func NewDiscovery(reg prometheus.Registerer) *Discovery {
	d := &Discovery{
		resolutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_discovery_resolutions_total",
			Help: "DNS resolutions of a discovered pool's name, by result: ok, empty, nxdomain, servfail, error.",
		}, []string{"route", "pool", "result"}),
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "canaryd_discovery_instances",
			Help: "Instances the pool's DNS discovery applies now (the last good set; a drop applies in steps).",
		}, []string{"route", "pool"}),
		success: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "canaryd_discovery_last_success_timestamp_seconds",
			Help: "When the pool's name last resolved (an answer, records or none), in Unix seconds.",
		}, []string{"route", "pool"}),
	}
	reg.MustRegister(d.resolutions, d.instances, d.success)
	return d
}

// Resolution counts one resolution.
func (d *Discovery) Resolution(route, pool, result string) {
	d.resolutions.WithLabelValues(route, pool, result).Inc()
}

// Instances sets the pool's applied count.
func (d *Discovery) Instances(route, pool string, n int) {
	d.instances.WithLabelValues(route, pool).Set(float64(n))
}

// Success records a resolution that answered.
func (d *Discovery) Success(route, pool string, at time.Time) {
	d.success.WithLabelValues(route, pool).Set(float64(at.UnixNano()) / 1e9)
}

// Forget drops a pool's series.
func (d *Discovery) Forget(route, pool string) {
	l := prometheus.Labels{"route": route, "pool": pool}
	d.resolutions.DeletePartialMatch(l)
	d.instances.Delete(l)
	d.success.Delete(l)
}
