package auth

import (
	"container/list"
	"math"
	"net/netip"
	"sync"
	"time"
)

const (
	defaultBurst    = 10
	defaultEvery    = 6 * time.Second
	defaultMaxAddrs = 10000
	// sweepPerFailure is how many least recently failed entries each
	// Failed call looks at to drop the ones that are full again, so memory
	// goes back down after an attack without a background goroutine.
	sweepPerFailure = 4
)

// Limiter bounds authentication failures per source address: a token bucket
// per address holding Burst tokens refilled at one per Every; each failure
// takes one; when empty the address is limited until a token is back.
//
// IPv4-mapped IPv6 addresses count as IPv4. Other IPv6 addresses are
// grouped by /64 prefix: a single host or home network is normally given a
// whole /64 and can pick any address in it (privacy addresses change by
// themselves), so limiting per address would give an attacker 2^64 fresh
// buckets. An invalid (zero) netip.Addr is one more bucket.
//
// Memory is bounded: at most MaxAddrs addresses are tracked, evicting the
// least recently failed, and entries whose bucket is full again are dropped
// (an untracked address has a full bucket). An attacker controlling more
// than MaxAddrs prefixes can thus make the limiter forget addresses; that is
// the price of the bound.
//
// The zero value is ready to use with the defaults. Set the fields before
// first use; a Limiter is safe for concurrent use and must not be copied
// after first use.
type Limiter struct {
	// Burst is the number of failures allowed in a row; 0 means 10.
	Burst int
	// Every is the time to earn back one failure; 0 means 6 s (10 per minute).
	Every time.Duration
	// MaxAddrs is the number of addresses tracked at most; 0 means 10000.
	MaxAddrs int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket // guarded by mu
	order   list.List              // of *bucket, least recently failed first; guarded by mu
}

// bucket is a token bucket stored as the time at which it will be full
// again (the "theoretical arrival time" of GCRA): at time now it holds
// Burst - (full-now)/Every tokens. One timestamp instead of a count and a
// time, and no rounding.
type bucket struct {
	key  netip.Addr
	full time.Time
	elem *list.Element
}

func (l *Limiter) params() (burst int, every time.Duration, maxAddrs int) {
	burst, every, maxAddrs = l.Burst, l.Every, l.MaxAddrs
	if burst <= 0 {
		burst = defaultBurst
	}
	if every <= 0 {
		every = defaultEvery
	}
	if maxAddrs <= 0 {
		maxAddrs = defaultMaxAddrs
	}
	return burst, every, maxAddrs
}

// window returns n*every, saturating instead of overflowing.
func window(n int, every time.Duration) time.Duration {
	if n > 0 && every > time.Duration(math.MaxInt64)/time.Duration(n) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(n) * every
}

func (l *Limiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// limiterKey maps an address to its bucket: IPv4 as is, IPv6 by /64.
func limiterKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a.WithZone("")
}

// deficit returns how far b is from full at now (zero if untracked or full),
// dropping the entry once it is full. Called with l.mu held.
func (l *Limiter) deficit(key netip.Addr, now time.Time) time.Duration {
	b, ok := l.buckets[key]
	if !ok {
		return 0
	}
	d := b.full.Sub(now)
	if d <= 0 {
		l.drop(b)
		return 0
	}
	return d
}

func (l *Limiter) drop(b *bucket) {
	l.order.Remove(b.elem)
	delete(l.buckets, b.key)
}

// Allowed reports whether addr may try to authenticate now. False means it
// is over the limit: the caller answers without checking credentials (and
// without counting another failure).
func (l *Limiter) Allowed(addr netip.Addr) bool {
	return l.RetryAfter(addr) == 0
}

// RetryAfter is how long until addr may try again (0 if allowed now).
func (l *Limiter) RetryAfter(addr netip.Addr) time.Duration {
	burst, every, _ := l.params()
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	// Allowed while at least one token is left, i.e. the deficit is at most
	// (Burst-1) tokens' worth of time.
	if d := l.deficit(limiterKey(addr), now) - window(burst-1, every); d > 0 {
		return d
	}
	return 0
}

// Failed records a failed attempt by addr and reports whether addr is now
// over the limit (the Burst-th failure in a row returns true). A failure
// recorded while already limited changes nothing: the bucket does not go
// below empty, so retrying while limited does not extend the limit.
func (l *Limiter) Failed(addr netip.Addr) bool {
	burst, every, maxAddrs := l.params()
	now := l.now()
	key := limiterKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = make(map[netip.Addr]*bucket)
	}

	d := l.deficit(key, now)
	if d <= window(burst-1, every) {
		d += every
	}
	// else already empty: nothing left to take, and a limited address
	// does not get limited for longer by trying anyway.
	b, ok := l.buckets[key]
	if ok {
		l.order.MoveToBack(b.elem)
	} else {
		if len(l.buckets) >= maxAddrs {
			l.drop(l.order.Front().Value.(*bucket))
		}
		b = &bucket{key: key}
		b.elem = l.order.PushBack(b)
		l.buckets[key] = b
	}
	b.full = now.Add(d)

	for i := 0; i < sweepPerFailure; i++ {
		e := l.order.Front()
		if e == nil || e == b.elem {
			break
		}
		f := e.Value.(*bucket)
		if f.full.After(now) {
			break
		}
		l.drop(f)
	}
	return d > window(burst-1, every)
}
