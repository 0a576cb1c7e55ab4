package metrics

import "github.com/prometheus/client_golang/prometheus"

// Panics counts the panics recovered in canaryd's own goroutines.
type Panics struct{ total *prometheus.CounterVec }

// NewPanics registers canaryd_internal_panics_total on reg.
func NewPanics(reg prometheus.Registerer) *Panics {
	p := &Panics{total: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "canaryd_internal_panics_total",
		Help: "Panics recovered in canaryd's background goroutines, by component. Any is a bug: the process turns unready and unhealthy to be replaced.",
	}, []string{"component"})}
	reg.MustRegister(p.total)
	return p
}

// Inc counts one panic of component.
func (p *Panics) Inc(component string) { p.total.WithLabelValues(component).Inc() }
