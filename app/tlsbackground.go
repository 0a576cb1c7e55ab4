package app

import (
	"context"
	"crypto/rand"
	"time"

	"canaryd/panics"
	"canaryd/tlsfiles"

	"go.uber.org/zap"
)

// ticketKeysKept is how many session ticket keys decrypt: the newest,
// which encrypts, and the two before it, so a ticket resumes for two to
// three rotation periods.
const ticketKeysKept = 3

// firstTicketKeys sets the first session ticket key, with TLS on, before
// anything is served (nil without TLS). Set by the rotation goroutine
// instead, a handshake that came first would get a ticket under the
// runtime's own key, which the first key set then drops: that ticket
// would never resume.
func (s *Server) firstTicketKeys() [][32]byte {
	if s.certs == nil {
		return nil
	}
	var k [32]byte
	rand.Read(k[:])
	keys := [][32]byte{k}
	s.certs.SetTicketKeys(keys)
	return keys
}

// startTLSBackground starts, with TLS on, the session ticket rotation
// (from the keys set first) and the OCSP stapler. Until rctx ends.
func (s *Server) startTLSBackground(rctx context.Context, first [][32]byte) {
	if s.certs == nil {
		return
	}
	s.background.Add(2)
	go func() {
		defer s.background.Done()
		panics.Guard(s.panicked, "session ticket keys", func() { s.rotateTickets(rctx, first) })
	}()
	go func() {
		defer s.background.Done()
		log := s.log.Named("ocsp")
		panics.Guard(s.panicked, "OCSP stapler", func() {
			s.certs.RunOCSP(rctx, nil, func(ev tlsfiles.OCSPEvent) {
				s.tlsMetrics.OCSPFetched(ev.Err == nil)
				if ev.Err != nil {
					log.Warn("OCSP staple not refreshed; handshakes go on with the previous staple until it expires, then without one",
						zap.String("certificate", ev.Cert), zap.Error(ev.Err), zap.Time("retry_at", ev.Next))
					return
				}
				log.Info("OCSP staple refreshed", zap.String("certificate", ev.Cert),
					zap.Time("next_update", ev.NextUpdate), zap.Time("refresh_at", ev.Next))
			})
		})
	}()
}

// rotateTickets sets a new session ticket key every
// tls.session_ticket_rotation, keeping ticketKeysKept. In a cluster the
// keys come from etcd (the cluster's TicketKeys), looked at every quarter
// period (at most every 10s) so that every member holds a new key soon
// after the first one makes it; while etcd cannot be reached the last
// keys stay.
func (s *Server) rotateTickets(ctx context.Context, keys [][32]byte) {
	period := s.static.TLS.SessionTicketRotation.D()
	made := time.Now() // keys[0], set before serving
	look := period
	if s.cluster != nil {
		look = min(max(period/4, 250*time.Millisecond), 10*time.Second)
	}
	failing := false
	for {
		if s.cluster != nil {
			got, err := s.cluster.TicketKeys(ctx, period, ticketKeysKept)
			switch {
			case err != nil && ctx.Err() == nil && !failing:
				failing = true
				s.log.Warn("session ticket keys not read from etcd; the last ones stay in use", zap.Error(err))
			case err == nil:
				if failing {
					s.log.Info("session ticket keys read from etcd again")
				}
				failing = false
				s.certs.SetTicketKeys(got)
			}
		} else if time.Since(made) >= period {
			var k [32]byte
			rand.Read(k[:])
			keys = append([][32]byte{k}, keys...)[:min(len(keys)+1, ticketKeysKept)]
			made = time.Now()
			s.certs.SetTicketKeys(keys)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(look):
		}
	}
}
