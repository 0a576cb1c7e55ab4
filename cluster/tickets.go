package cluster

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The listener's session ticket keys live under tls/tickets, one JSON
// document of the newest keys first, so that a ticket one member issued
// resumes on any other. Whichever member first finds the newest key a
// period old writes the next one, in a transaction on the key's revision:
// two members that rotate at once make one key, not two. Anyone who can
// read etcd can read the keys (and so decrypt recorded TLS 1.2 sessions
// that used tickets): keep etcd's TLS and authentication on, as for the
// rest of canaryd's keys.

type ticketDoc struct {
	Keys []ticketKey `json:"keys"`
}

type ticketKey struct {
	Key     []byte    `json:"key"`
	Created time.Time `json:"created"`
}

// TicketKeys returns the cluster's session ticket keys, newest first,
// after rotating them when the newest is period old (keeping keep keys in
// all).
func (c *Cluster) TicketKeys(ctx context.Context, period time.Duration, keep int) ([][32]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*opTimeout)
	defer cancel()
	key := c.key("tls", "tickets")
	resp, err := c.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("etcd: reading the session ticket keys: %w", err)
	}
	var doc ticketDoc
	var rev int64
	if len(resp.Kvs) == 1 {
		rev = resp.Kvs[0].ModRevision
		if err := json.Unmarshal(resp.Kvs[0].Value, &doc); err != nil {
			doc = ticketDoc{} // unreadable: start again
		}
	}
	now := time.Now()
	if len(doc.Keys) == 0 || now.Sub(doc.Keys[0].Created) >= period {
		next := ticketKey{Key: make([]byte, 32), Created: now}
		rand.Read(next.Key)
		doc.Keys = append([]ticketKey{next}, doc.Keys...)
		doc.Keys = doc.Keys[:min(len(doc.Keys), keep)]
		data, err := json.Marshal(doc)
		if err != nil {
			return nil, err
		}
		tr, err := c.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(data))).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return nil, fmt.Errorf("etcd: writing the session ticket keys: %w", err)
		}
		if !tr.Succeeded { // another member rotated first: take its keys
			doc = ticketDoc{}
			if kvs := tr.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
				if err := json.Unmarshal(kvs[0].Value, &doc); err != nil {
					return nil, fmt.Errorf("etcd: the session ticket keys are not readable: %w", err)
				}
			}
		}
	}
	var out [][32]byte
	for _, k := range doc.Keys {
		if len(k.Key) == 32 {
			out = append(out, [32]byte(k.Key))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("etcd: no session ticket key in %s", key)
	}
	return out, nil
}
