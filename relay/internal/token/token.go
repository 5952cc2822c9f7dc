package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Size is the number of random bytes in a token (256 bits).
const Size = 32

// ErrInvalid is wrapped by every error [Store.Redeem] returns.
var ErrInvalid = errors.New("invalid session token")

// The reasons a token is refused. Each wraps [ErrInvalid]; they exist for
// logs and tests, never for the HTTP answer.
var (
	ErrUnknown  = fmt.Errorf("%w: unknown or ended session", ErrInvalid)
	ErrMismatch = fmt.Errorf("%w: token does not match", ErrInvalid)
	ErrUsed     = fmt.Errorf("%w: token already used", ErrInvalid)
	ErrExpired  = fmt.Errorf("%w: token expired", ErrInvalid)
	ErrMissing  = fmt.Errorf("%w: no token presented", ErrInvalid)
)

// New returns a new random token read from r (crypto/rand when r is nil):
// [Size] bytes encoded as unpadded base64url (43 characters).
func New(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [Size]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("failed to read random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// NewID returns a random identifier in the form of a version 4 UUID, read
// from r (crypto/rand when r is nil). Session IDs name a session in URLs
// and logs; they are not secrets.
func NewID(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("failed to read random bytes: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// Store holds the outstanding tokens, one per key (a session ID).
//
// The zero value is ready to use. A Store is safe for concurrent use.
type Store struct {
	// Now returns the current time; nil means time.Now. Set before first use.
	Now func() time.Time
	// Rand is the source of randomness; nil means crypto/rand. Set before first use.
	Rand io.Reader

	mu      sync.Mutex
	entries map[string]*entry // guarded by mu
}

type entry struct {
	sum     [sha256.Size]byte
	expires time.Time
	used    bool
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Issue mints a token for key, valid for ttl and for one [Store.Redeem].
// It fails if key already has a token.
func (s *Store) Issue(key string, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("failed to issue token: ttl %v is not positive", ttl)
	}
	tok, err := New(s.Rand)
	if err != nil {
		return "", fmt.Errorf("failed to issue token: %w", err)
	}
	now := s.now()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(now)
	if s.entries == nil {
		s.entries = make(map[string]*entry)
	}
	if _, ok := s.entries[key]; ok {
		return "", fmt.Errorf("failed to issue token: key %q already has one", key)
	}
	s.entries[key] = &entry{sum: sha256.Sum256([]byte(tok)), expires: now.Add(ttl)}
	return tok, nil
}

// Redeem checks presented against key's token and, on success, marks it
// used so that it is never accepted again. The comparison takes the same
// time whatever the presented value. Errors wrap [ErrInvalid].
func (s *Store) Redeem(key, presented string) error {
	if presented == "" {
		return ErrMissing
	}
	sum := sha256.Sum256([]byte(presented))
	now := s.now()

	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if !ok {
		return ErrUnknown
	}
	// Compare first, so that an attacker learns nothing about the token's
	// state (used, expired) without knowing the token.
	if subtle.ConstantTimeCompare(sum[:], e.sum[:]) != 1 {
		return ErrMismatch
	}
	if e.used {
		return ErrUsed
	}
	if !now.Before(e.expires) {
		delete(s.entries, key)
		return ErrExpired
	}
	e.used = true
	return nil
}

// Revoke forgets key's token, used or not. It is a no-op for unknown keys.
func (s *Store) Revoke(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.entries, key)
}

// Len reports how many tokens the store holds, expired ones included until
// the next Issue purges them.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// purgeLocked drops expired entries. Used entries stay until they expire so
// that a replay is reported as ErrUsed rather than ErrUnknown.
func (s *Store) purgeLocked(now time.Time) {
	for k, e := range s.entries {
		if !now.Before(e.expires) {
			delete(s.entries, k)
		}
	}
}
