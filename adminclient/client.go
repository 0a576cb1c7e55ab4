// Package adminclient talks to a running canaryd's admin API (docs/
// admin-api.md): the CLI's commands and the end-to-end tests use it, and
// it renders the answers as the CLI prints them.
package adminclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"canaryd/admin"
	"canaryd/rollout"
)

// Client is one admin API. The zero value is not usable: use New.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New is a client of the admin API at addr (host:port or a URL); token is
// the bearer token of mutations ("" when the admin has none).
func New(addr, token string) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{base: strings.TrimSuffix(addr, "/"), token: token, http: &http.Client{Timeout: 10 * time.Second}}
}

// Error is an answer other than 2xx: its status and the API's message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d)", e.Message, e.Status) }

// Routes is GET /api/v1/routes.
func (c *Client) Routes() ([]admin.RouteView, error) {
	var out []admin.RouteView
	return out, c.do(http.MethodGet, "/api/v1/routes", nil, &out)
}

// Route is GET /api/v1/routes/{route}.
func (c *Client) Route(name string) (admin.RouteView, error) {
	var out admin.RouteView
	return out, c.do(http.MethodGet, "/api/v1/routes/"+name, nil, &out)
}

// Cluster is GET /api/v1/cluster (NotFound for a single process).
func (c *Client) Cluster() (admin.ClusterView, error) {
	var out admin.ClusterView
	return out, c.do(http.MethodGet, "/api/v1/cluster", nil, &out)
}

// Control is POST /api/v1/routes/{route}/{action}.
func (c *Client) Control(route string, a rollout.Action) (rollout.Status, error) {
	var out rollout.Status
	return out, c.do(http.MethodPost, "/api/v1/routes/"+route+"/"+a.String(), nil, &out)
}

// Approve is POST /api/v1/routes/{route}/approve.
func (c *Client) Approve(route string, req admin.ApproveRequest) (rollout.Status, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return rollout.Status{}, err
	}
	var out rollout.Status
	return out, c.do(http.MethodPost, "/api/v1/routes/"+route+"/approve", body, &out)
}

// SetWeights is PUT /api/v1/routes/{route}/weights.
func (c *Client) SetWeights(route string, weights map[string]float64) (admin.WeightsResult, error) {
	body, err := json.Marshal(weights)
	if err != nil {
		return admin.WeightsResult{}, err
	}
	var out admin.WeightsResult
	return out, c.do(http.MethodPut, "/api/v1/routes/"+route+"/weights", body, &out)
}

// Ready asks /readyz: nil when the proxy takes traffic.
func (c *Client) Ready() error {
	resp, err := c.http.Get(c.base + "/readyz")
	if err != nil {
		return c.unreachable(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not ready: %s", resp.Status)
	}
	return nil
}

func (c *Client) unreachable(err error) error {
	return fmt.Errorf("admin API at %s: %v (is canaryd running? see --admin)", c.base, err)
}

// do sends a request (body as JSON if any) and decodes a JSON answer into
// v; an error answer becomes an *Error with the API's message.
func (c *Client) do(method, path string, body []byte, v any) error {
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.unreachable(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &Error{Status: resp.StatusCode, Message: e.Error}
		}
		return &Error{Status: resp.StatusCode, Message: "admin API answered " + resp.Status}
	}
	return json.Unmarshal(data, v)
}

func instancesPath(route, pool string) string {
	return "/api/v1/routes/" + url.PathEscape(route) + "/pools/" + url.PathEscape(pool) + "/instances"
}

// Instances is GET .../pools/{pool}/instances.
func (c *Client) Instances(route, pool string) (admin.InstancesView, error) {
	var out admin.InstancesView
	return out, c.do(http.MethodGet, instancesPath(route, pool), nil, &out)
}

// Register is PUT (replace true) or POST .../pools/{pool}/instances.
func (c *Client) Register(route, pool string, replace bool, req admin.InstancesRequest) (admin.InstancesView, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return admin.InstancesView{}, err
	}
	method := http.MethodPost
	if replace {
		method = http.MethodPut
	}
	var out admin.InstancesView
	return out, c.do(method, instancesPath(route, pool), body, &out)
}

// Deregister is DELETE .../pools/{pool}/instances/{addr}.
func (c *Client) Deregister(route, pool, addr string) (admin.InstancesView, error) {
	var out admin.InstancesView
	return out, c.do(http.MethodDelete, instancesPath(route, pool)+"/"+url.PathEscape(addr), nil, &out)
}
