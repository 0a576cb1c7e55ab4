package app

import (
	"testing"

	"canaryd/balancer"
	"canaryd/config"
)

// 100% of a route is one number everywhere: the balancer's schedule and
// the config's percentages.
func TestFullIsTheSchedule(t *testing.T) {
	if config.Full.BasisPoints() != balancer.Slots {
		t.Fatalf("config.Full = %d basis points, balancer.Slots = %d", config.Full.BasisPoints(), balancer.Slots)
	}
}
