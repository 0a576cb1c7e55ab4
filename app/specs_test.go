package app

import (
	"testing"
	"time"

	"canaryd/balancer"
	"canaryd/config"
	"canaryd/proxy"
)

// 100% of a route is one number everywhere: the balancer's schedule and
// the config's percentages.
func TestFullIsTheSchedule(t *testing.T) {
	if config.Full.BasisPoints() != balancer.Slots {
		t.Fatalf("config.Full = %d basis points, balancer.Slots = %d", config.Full.BasisPoints(), balancer.Slots)
	}
}

// The proxy's own defaults (for callers without a config) are the
// config's: one value each, written twice only across the import rule.
func TestProxyDefaultsAreTheConfigs(t *testing.T) {
	for _, tc := range []struct {
		name          string
		config, proxy any
	}{
		{"dial_timeout", config.DefaultDialTimeout, proxy.DefaultDialTimeout},
		{"response_header_timeout", config.DefaultResponseHeaderTimeout, proxy.DefaultResponseHeaderTimeout},
		{"idle_conn_timeout", config.DefaultIdleConnTimeout, proxy.DefaultIdleConnTimeout},
		{"max_idle_conns_per_host", config.DefaultMaxIdleConnsPerHost, proxy.DefaultMaxIdleConnsPerHost},
		{"max_response_header_bytes", config.DefaultMaxResponseHeaderBytes, proxy.DefaultMaxResponseHeaderBytes},
		{"mirror queue", config.DefaultMirrorQueue, proxy.DefaultMirrorQueue},
		{"mirror concurrency", config.DefaultMirrorConcurrency, proxy.DefaultMirrorConcurrency},
		{"mirror timeout", time.Duration(config.DefaultMirrorTimeout), time.Duration(proxy.DefaultMirrorTimeout)},
		{"compare_max_bytes", config.DefaultCompareMaxBytes, proxy.DefaultCompareMaxBytes},
	} {
		if tc.config != tc.proxy {
			t.Errorf("%s: config %v, proxy %v", tc.name, tc.config, tc.proxy)
		}
	}
}
