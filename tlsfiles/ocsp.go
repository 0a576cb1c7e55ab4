package tlsfiles

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"golang.org/x/crypto/ocsp"
)

// OCSPEvent is one fetch of a staple, for logs and metrics.
type OCSPEvent struct {
	Cert string // the certificate's name (Cert.Name)
	// Err is why the fetch failed (the previous staple, if any, stays
	// until it expires); nil when it succeeded.
	Err error
	// NextUpdate is the new staple's; Next is when it is fetched again.
	NextUpdate, Next time.Time
}

// Bounds of the OCSP loop. A staple is fetched again halfway from its
// ThisUpdate to its NextUpdate (Let's Encrypt: every 3.5 days for a
// week), or after an hour when the responder gives no NextUpdate; a
// failure is retried after 1s, doubling to 5 minutes.
const (
	ocspTimeout      = 10 * time.Second
	ocspNoNextUpdate = time.Hour
	ocspMinBackoff   = time.Second
	ocspMaxBackoff   = 5 * time.Minute
	ocspMaxAnswer    = 64 << 10
)

// RunOCSP staples OCSP responses to the certificates that name a
// responder (and come with their issuer in the chain), until ctx ends.
// Fetches run here, never in a handshake: a handshake staples what was
// fetched last, or nothing. A response must verify against the issuer and
// say Good to be stapled; a staple past its NextUpdate is dropped. Without
// ServerOptions.OCSP it returns at once.
func (s *Server) RunOCSP(ctx context.Context, client *http.Client, report func(OCSPEvent)) {
	if !s.opts.OCSP {
		return
	}
	if client == nil {
		client = &http.Client{Timeout: ocspTimeout}
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.kick:
		}
		set := s.cur.Load()
		next := time.Now().Add(ocspNoNextUpdate)
		for i, c := range set.certs {
			leaf := c.base.Leaf
			if len(leaf.OCSPServer) == 0 {
				continue
			}
			now := time.Now()
			if st := c.stapled.Load(); st != nil && st.Leaf != nil {
				// Drop a staple past its NextUpdate: a stale one is worse than none.
				if r, err := ocsp.ParseResponse(st.OCSPStaple, nil); err == nil && !r.NextUpdate.IsZero() && now.After(r.NextUpdate) {
					c.stapled.Store(nil)
				}
			}
			if now.Before(c.refreshAt) {
				next = earliest(next, c.refreshAt)
				continue
			}
			ev := OCSPEvent{Cert: set.info[i].Name}
			raw, resp, err := fetchOCSP(ctx, client, c.base)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				c.backoff = min(max(2*c.backoff, ocspMinBackoff), ocspMaxBackoff)
				c.refreshAt = now.Add(c.backoff)
				ev.Err = err
			} else {
				st := *c.base
				st.OCSPStaple = raw
				c.stapled.Store(&st)
				c.backoff = 0
				c.refreshAt = now.Add(ocspNoNextUpdate)
				if !resp.NextUpdate.IsZero() {
					c.refreshAt = resp.ThisUpdate.Add(resp.NextUpdate.Sub(resp.ThisUpdate) / 2)
					if !c.refreshAt.After(now) {
						c.refreshAt = now.Add(ocspMinBackoff)
					}
				}
				ev.NextUpdate = resp.NextUpdate
			}
			ev.Next = c.refreshAt
			next = earliest(next, c.refreshAt)
			if report != nil {
				report(ev)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(time.Until(next))
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// fetchOCSP asks the certificate's first responder for its status.
func fetchOCSP(ctx context.Context, client *http.Client, c *tls.Certificate) ([]byte, *ocsp.Response, error) {
	leaf := c.Leaf
	if len(c.Certificate) < 2 {
		return nil, nil, fmt.Errorf("OCSP for %s: the certificate file has no issuer certificate after the leaf; append the chain to it", leaf.Subject)
	}
	issuer, err := x509.ParseCertificate(c.Certificate[1])
	if err != nil {
		return nil, nil, fmt.Errorf("OCSP: issuer certificate: %w", err)
	}
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("OCSP request: %w", err)
	}
	url := leaf.OCSPServer[0]
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(req))
	if err != nil {
		return nil, nil, fmt.Errorf("OCSP responder %s: %w", url, err)
	}
	hreq.Header.Set("Content-Type", "application/ocsp-request")
	hreq.Header.Set("Accept", "application/ocsp-response")
	hresp, err := client.Do(hreq)
	if err != nil {
		return nil, nil, fmt.Errorf("OCSP responder %s: %w", url, err)
	}
	defer hresp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(hresp.Body, ocspMaxAnswer+1))
	switch {
	case err != nil:
		return nil, nil, fmt.Errorf("OCSP responder %s: %w", url, err)
	case hresp.StatusCode != http.StatusOK:
		return nil, nil, fmt.Errorf("OCSP responder %s answered %s", url, hresp.Status)
	case len(raw) > ocspMaxAnswer:
		return nil, nil, fmt.Errorf("OCSP responder %s: answer over %d bytes", url, ocspMaxAnswer)
	}
	resp, err := ocsp.ParseResponseForCert(raw, leaf, issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("OCSP responder %s: %w", url, err)
	}
	switch {
	case resp.Status != ocsp.Good:
		return nil, nil, fmt.Errorf("OCSP responder %s says the certificate is %s; it is not stapled", url, statusName(resp.Status))
	case !resp.NextUpdate.IsZero() && time.Now().After(resp.NextUpdate):
		return nil, nil, errors.New("OCSP responder " + url + " sent a response past its NextUpdate")
	}
	return raw, resp, nil
}

func statusName(s int) string {
	switch s {
	case ocsp.Revoked:
		return "revoked"
	case ocsp.Unknown:
		return "unknown to it"
	}
	return fmt.Sprintf("in status %d", s)
}
