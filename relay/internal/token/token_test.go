package token

import (
	"bytes"
	"encoding/base64"
	"errors"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

func TestNewLengthAndRandomness(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		tok, err := New(nil)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			t.Fatalf("token %q is not base64url: %v", tok, err)
		}
		if len(raw) != Size || len(raw)*8 < 128 {
			t.Fatalf("token has %d bytes, want %d", len(raw), Size)
		}
		if seen[tok] {
			t.Fatalf("duplicate token after %d draws", len(seen))
		}
		seen[tok] = true
	}
}

func TestNewFailsOnShortRandom(t *testing.T) {
	if _, err := New(bytes.NewReader(make([]byte, Size-1))); err == nil {
		t.Fatal("New succeeded with too few random bytes")
	}
}

func TestNewID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a, err := NewID(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewID(nil)
	if !re.MatchString(a) || a == b {
		t.Fatalf("NewID = %q, %q", a, b)
	}
}

func TestRedeem(t *testing.T) {
	const ttl = 10 * time.Second
	tests := []struct {
		name string
		// run issues a token for "s1" (tok) and returns the error of the
		// redemption under test.
		run  func(s *Store, c *testutil.Clock, tok string) error
		want error // nil means success
	}{
		{"valid", func(s *Store, c *testutil.Clock, tok string) error { return s.Redeem("s1", tok) }, nil},
		{"just before expiry", func(s *Store, c *testutil.Clock, tok string) error {
			c.Add(ttl - time.Nanosecond)
			return s.Redeem("s1", tok)
		}, nil},
		{"expired", func(s *Store, c *testutil.Clock, tok string) error { c.Add(ttl); return s.Redeem("s1", tok) }, ErrExpired},
		{"reused", func(s *Store, c *testutil.Clock, tok string) error {
			if err := s.Redeem("s1", tok); err != nil {
				return err
			}
			return s.Redeem("s1", tok)
		}, ErrUsed},
		{"wrong session", func(s *Store, c *testutil.Clock, tok string) error { return s.Redeem("s2", tok) }, ErrUnknown},
		{"missing", func(s *Store, c *testutil.Clock, tok string) error { return s.Redeem("s1", "") }, ErrMissing},
		{"other token", func(s *Store, c *testutil.Clock, tok string) error {
			other, _ := New(nil)
			return s.Redeem("s1", other)
		}, ErrMismatch},
		{"prefix", func(s *Store, c *testutil.Clock, tok string) error { return s.Redeem("s1", tok[:len(tok)-1]) }, ErrMismatch},
		{"longer", func(s *Store, c *testutil.Clock, tok string) error { return s.Redeem("s1", tok+"A") }, ErrMismatch},
		{"last char flipped", func(s *Store, c *testutil.Clock, tok string) error {
			b := []byte(tok)
			b[len(b)-1] ^= 1
			return s.Redeem("s1", string(b))
		}, ErrMismatch},
		{"wrong then right", func(s *Store, c *testutil.Clock, tok string) error {
			if err := s.Redeem("s1", "nope"); !errors.Is(err, ErrMismatch) {
				return err
			}
			return s.Redeem("s1", tok)
		}, nil},
		{"revoked", func(s *Store, c *testutil.Clock, tok string) error { s.Revoke("s1"); return s.Redeem("s1", tok) }, ErrUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testutil.NewClock(time.Unix(1700000000, 0))
			s := &Store{Now: c.Now}
			tok, err := s.Issue("s1", ttl)
			if err != nil {
				t.Fatal(err)
			}
			err = tt.run(s, c, tok)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Redeem: %v, want success", err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Redeem: %v, want %v wrapping ErrInvalid", err, tt.want)
			}
		})
	}
}

func TestIssue(t *testing.T) {
	c := testutil.NewClock(time.Unix(1700000000, 0))
	s := &Store{Now: c.Now}
	if _, err := s.Issue("a", 0); err == nil {
		t.Fatal("Issue accepted a zero TTL")
	}
	a, err := s.Issue("a", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Issue("a", time.Second); err == nil {
		t.Fatal("Issue accepted a second token for the same key")
	}
	b, err := s.Issue("b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("two keys got the same token")
	}
	if err := s.Redeem("a", b); !errors.Is(err, ErrMismatch) {
		t.Fatalf("cross-session token: %v, want ErrMismatch", err)
	}
	// Expired entries are purged on the next Issue.
	c.Add(2 * time.Second)
	if _, err := s.Issue("c", time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := s.Len(); n != 2 {
		t.Fatalf("Len = %d after purge, want 2", n)
	}
}

func TestConcurrentRedeemOnce(t *testing.T) {
	s := &Store{}
	tok, err := s.Issue("s", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 32 {
		wg.Go(func() {
			if s.Redeem("s", tok) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d concurrent redemptions succeeded, want exactly 1", ok)
	}
}
