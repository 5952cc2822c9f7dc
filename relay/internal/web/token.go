package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Token errors.
var (
	ErrBadToken     = errors.New("invalid token")
	ErrExpiredToken = errors.New("expired token")
)

// Signer makes and checks the page's bearer tokens: "v1.<user>.<expiry
// Unix seconds>.<HMAC-SHA256 of the rest>", base64url. They are stateless
// (nothing to store, nothing to leak from memory) and short-lived; the key
// is random per process, so a restart logs everyone out.
type Signer struct {
	key []byte
	ttl time.Duration
	now func() time.Time
}

// NewSigner returns a Signer whose tokens live ttl.
func NewSigner(ttl time.Duration) (*Signer, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("failed to make the token key: %w", err)
	}
	return &Signer{key: key, ttl: ttl, now: time.Now}, nil
}

// TTL is how long a token lives.
func (s *Signer) TTL() time.Duration { return s.ttl }

// Sign returns a token for user and when it expires.
func (s *Signer) Sign(user string) (string, time.Time) {
	exp := s.now().Add(s.ttl).Truncate(time.Second)
	payload := "v1." + base64.RawURLEncoding.EncodeToString([]byte(user)) + "." + strconv.FormatInt(exp.Unix(), 10)
	return payload + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload)), exp
}

// Verify returns the user a token names.
func (s *Signer) Verify(token string) (string, error) {
	i := strings.LastIndexByte(token, '.')
	if i < 0 || len(token) > 512 {
		return "", ErrBadToken
	}
	payload, sig := token[:i], token[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(payload)) {
		return "", ErrBadToken
	}
	parts := strings.Split(payload, ".")
	if len(parts) != 3 || parts[0] != "v1" {
		return "", ErrBadToken
	}
	user, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", ErrBadToken
	}
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return "", ErrBadToken
	}
	if !s.now().Before(time.Unix(exp, 0)) {
		return "", ErrExpiredToken
	}
	return string(user), nil
}

func (s *Signer) mac(payload string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}
