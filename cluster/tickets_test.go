package cluster

import (
	"context"
	"sync"
	"testing"
	"time"

	"canaryd/internal/etcdtest"

	"go.uber.org/goleak"
)

// Two members asking for the session ticket keys at once, many times,
// agree every time: the first call makes one key, not one each, and a
// rotation made by one is what the other reads; three keys are kept.
func TestTicketKeysAgreeAndRotate(t *testing.T) {
	defer goleak.VerifyNone(t, leakOpts...)
	etcd := etcdtest.Start(t, 1)
	a := member(t, etcd.Endpoints(), "a", newRecorder(), nil)
	defer a.Close()
	b := member(t, etcd.Endpoints(), "b", newRecorder(), nil)
	defer b.Close()
	ctx := context.Background()
	ask := func(period time.Duration) (ka, kb [][32]byte) {
		var wg sync.WaitGroup
		wg.Add(2)
		var ea, eb error
		go func() { defer wg.Done(); ka, ea = a.TicketKeys(ctx, period, 3) }()
		go func() { defer wg.Done(); kb, eb = b.TicketKeys(ctx, period, 3) }()
		wg.Wait()
		if ea != nil || eb != nil {
			t.Fatalf("TicketKeys: %v, %v", ea, eb)
		}
		return ka, kb
	}
	ka, kb := ask(time.Hour)
	if len(ka) != 1 || len(kb) != 1 || ka[0] != kb[0] {
		t.Fatalf("first call: %d and %d keys, equal %v; want one shared key", len(ka), len(kb), len(ka) == 1 && len(kb) == 1 && ka[0] == kb[0])
	}
	first := ka[0]
	// A period that has passed: each call at once rotates, yet both
	// members end with the same list.
	for i := 2; i <= 4; i++ {
		time.Sleep(20 * time.Millisecond)
		ka, kb = ask(10 * time.Millisecond)
		if len(ka) != len(kb) || ka[0] != kb[0] {
			t.Fatalf("rotation %d: the members disagree (%d and %d keys)", i, len(ka), len(kb))
		}
		if want := min(i, 3); len(ka) != want {
			t.Fatalf("rotation %d: %d keys; want %d", i, len(ka), want)
		}
	}
	for _, k := range ka {
		if k == first {
			t.Fatal("the first key is still kept after three rotations")
		}
	}
	// Within the period nothing rotates.
	again, _ := a.TicketKeys(ctx, time.Hour, 3)
	if again[0] != ka[0] || len(again) != len(ka) {
		t.Fatal("keys changed within the rotation period")
	}
}
