package auth

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func (l *Limiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.order.Len() != len(l.buckets) {
		panic("limiter list and map disagree")
	}
	return len(l.buckets)
}

func TestLimiterBucket(t *testing.T) {
	clk := newClock()
	l := &Limiter{Burst: 3, Every: 10 * time.Second, Now: clk.Now}
	a := netip.MustParseAddr("192.0.2.1")
	other := netip.MustParseAddr("192.0.2.2")

	type step struct {
		advance     time.Duration
		fail        bool // call Failed (and check its result against wantLimited)
		wantLimited bool
		wantRetry   time.Duration
	}
	steps := []step{
		{wantRetry: 0},
		{fail: true, wantLimited: false},
		{fail: true, wantLimited: false},
		{fail: true, wantLimited: true, wantRetry: 10 * time.Second}, // burst used up
		{advance: 4 * time.Second, wantLimited: true, wantRetry: 6 * time.Second},
		{fail: true, wantLimited: true, wantRetry: 6 * time.Second}, // cannot go below empty
		{advance: 6 * time.Second, wantRetry: 0},                    // one token back
		{fail: true, wantLimited: true, wantRetry: 10 * time.Second},
		{advance: 20 * time.Second, wantRetry: 0}, // two tokens back
		{fail: true, wantLimited: false},
		{fail: true, wantLimited: true, wantRetry: 10 * time.Second},
	}
	for i, s := range steps {
		clk.Add(s.advance)
		if s.fail {
			if got := l.Failed(a); got != s.wantLimited {
				t.Fatalf("step %d: Failed = %v, want %v", i, got, s.wantLimited)
			}
		}
		if got := l.Allowed(a); got == s.wantLimited {
			t.Fatalf("step %d: Allowed = %v, want %v", i, got, !s.wantLimited)
		}
		if got := l.RetryAfter(a); got != s.wantRetry {
			t.Fatalf("step %d: RetryAfter = %v, want %v", i, got, s.wantRetry)
		}
		if !l.Allowed(other) {
			t.Fatalf("step %d: an unrelated address is limited", i)
		}
	}

	// Once full again, the entry is dropped.
	clk.Add(30 * time.Second)
	if !l.Allowed(a) {
		t.Fatal("not allowed after a full refill")
	}
	if n := l.tracked(); n != 0 {
		t.Fatalf("%d entries tracked after a full refill, want 0", n)
	}
}

func TestLimiterDefaults(t *testing.T) {
	clk := newClock()
	l := &Limiter{Now: clk.Now}
	a := netip.MustParseAddr("198.51.100.7")
	for i := range 10 {
		if !l.Allowed(a) {
			t.Fatalf("limited after %d failures", i)
		}
		if limited := l.Failed(a); limited != (i == 9) {
			t.Fatalf("failure %d: limited = %v", i+1, limited)
		}
	}
	if l.Allowed(a) {
		t.Fatal("allowed after 10 failures")
	}
	if got := l.RetryAfter(a); got != 6*time.Second {
		t.Fatalf("RetryAfter = %v, want 6s", got)
	}
	clk.Add(6 * time.Second)
	if !l.Allowed(a) {
		t.Fatal("not allowed 6 s later")
	}
	// A zero Limiter with no clock works too.
	var z Limiter
	if !z.Allowed(a) || z.Failed(a) || z.RetryAfter(a) != 0 {
		t.Fatal("zero Limiter")
	}
}

func TestLimiterGrouping(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"same /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
		{"other /64", "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"IPv4-mapped", "::ffff:192.0.2.1", "192.0.2.1", true},
		{"IPv4 neighbours", "192.0.2.1", "192.0.2.2", false},
		{"zone ignored", "fe80::1%eth0", "fe80::2%eth1", true},
		{"IPv4 vs its /64-looking IPv6", "192.0.2.1", "::c000:201", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			l := &Limiter{Burst: 1, Every: time.Minute, Now: clk.Now}
			if !l.Failed(netip.MustParseAddr(tc.a)) {
				t.Fatal("Burst 1: one failure should limit")
			}
			if got := !l.Allowed(netip.MustParseAddr(tc.b)); got != tc.same {
				t.Fatalf("%s limited = %v after %s failed, want %v", tc.b, got, tc.a, tc.same)
			}
		})
	}
	// The invalid address is one bucket of its own.
	l := &Limiter{Burst: 1}
	l.Failed(netip.Addr{})
	if l.Allowed(netip.Addr{}) || !l.Allowed(netip.MustParseAddr("192.0.2.1")) {
		t.Fatal("zero Addr")
	}
}

func TestLimiterMemoryBound(t *testing.T) {
	clk := newClock()
	l := &Limiter{Burst: 2, Every: time.Minute, MaxAddrs: 5, Now: clk.Now}
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }

	// The first address fails often enough to be limited, then 100 others
	// fail once each: the table stays at 5 and forgets the oldest.
	l.Failed(addr(0))
	l.Failed(addr(0))
	if l.Allowed(addr(0)) {
		t.Fatal("addr 0 should be limited")
	}
	for i := 1; i <= 100; i++ {
		l.Failed(addr(i))
		if n := l.tracked(); n > 5 {
			t.Fatalf("%d entries tracked, cap 5", n)
		}
	}
	if !l.Allowed(addr(0)) {
		t.Fatal("the least recently failed address was not evicted")
	}
	for i := 96; i <= 100; i++ {
		if got := l.RetryAfter(addr(i)); got != 0 {
			t.Fatalf("addr %d: RetryAfter %v after one failure of two", i, got)
		}
		l.mu.Lock()
		_, ok := l.buckets[addr(i)]
		l.mu.Unlock()
		if !ok {
			t.Fatalf("recent addr %d not tracked", i)
		}
	}

	// A limited address that keeps failing stays tracked (most recent).
	for i := 200; i < 210; i++ {
		l.Failed(addr(1000))
		l.Failed(addr(i))
	}
	if l.Allowed(addr(1000)) {
		t.Fatal("a repeatedly failing address was evicted")
	}

	// Entries that are full again go away as other failures come in.
	clk.Add(time.Hour)
	l.Failed(addr(500))
	l.Failed(addr(501))
	if n := l.tracked(); n != 2 {
		t.Fatalf("%d entries tracked after refill, want 2", n)
	}
}

func TestLimiterConcurrent(t *testing.T) {
	l := &Limiter{Burst: 5, Every: time.Millisecond, MaxAddrs: 50}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				a := netip.MustParseAddr(fmt.Sprintf("2001:db8:%x:%x::1", g, i%64))
				if l.Allowed(a) {
					l.Failed(a)
				}
				_ = l.RetryAfter(a)
			}
		})
	}
	wg.Wait()
	if n := l.tracked(); n > 50 {
		t.Fatalf("%d entries tracked, cap 50", n)
	}
}

func TestWindowSaturates(t *testing.T) {
	l := &Limiter{Burst: 1 << 40, Every: time.Hour}
	a := netip.MustParseAddr("192.0.2.9")
	if l.Failed(a) || !l.Allowed(a) {
		t.Fatal("huge burst")
	}
}
