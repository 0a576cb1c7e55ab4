package metrics

import "github.com/prometheus/client_golang/prometheus"

// Overload exports server.limits: what was refused, the limits in force,
// and how close to them the proxy is.
type Overload struct {
	refused *prometheus.CounterVec
	limit   *prometheus.GaugeVec
	byName  map[string]prometheus.Counter // read-only after NewOverload
}

// NewOverload registers the overload metrics on reg with a series for
// each limit from the start; open and inFlight are read at each scrape.
func NewOverload(reg prometheus.Registerer, limits map[string]int, open, inFlight func() int) *Overload {
	o := &Overload{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "canaryd_overload_refused_total",
			Help: "Client connections closed as accepted (max_connections, max_connections_per_client) and requests answered 503 (max_requests_in_flight, max_requests_in_flight_per_client) for being over server.limits.",
		}, []string{"limit"}),
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "canaryd_overload_limit",
			Help: "Each of server.limits in force (set, or derived from the descriptor limit).",
		}, []string{"limit"}),
	}
	reg.MustRegister(o.refused, o.limit,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "canaryd_client_connections",
			Help: "Client connections open on the proxy listener.",
		}, func() float64 { return float64(open()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "canaryd_requests_in_flight",
			Help: "Requests being served by the proxy now (a WebSocket or stream counts while it is open).",
		}, func() float64 { return float64(inFlight()) }))
	o.byName = map[string]prometheus.Counter{}
	for name, v := range limits {
		o.byName[name] = o.refused.WithLabelValues(name)
		o.limit.WithLabelValues(name).Set(float64(v))
	}
	return o
}

// Refused counts one refusal over the named limit.
func (o *Overload) Refused(limit string) {
	if c := o.byName[limit]; c != nil {
		c.Inc()
		return
	}
	o.refused.WithLabelValues(limit).Inc()
}
