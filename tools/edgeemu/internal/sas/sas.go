// Package sas parses, verifies and mints IoT Hub shared access signatures.
//
// A token looks like
//
//	SharedAccessSignature sr=<urlenc resource>&sig=<urlenc base64 HMAC-SHA256>&se=<unix seconds>[&skn=<policy>]
//
// and its signature is HMAC-SHA256(key, urlencode(resource) + "\n" + se). Clients disagree on the
// URL encoder (Go's QueryEscape, JavaScript's encodeURIComponent, C's lower-case hex), so Verify
// accepts the string-to-sign built from the sr text exactly as the client sent it as well as the
// canonical re-encodings of the decoded resource; all of them name the same resource.
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every token.
const Prefix = "SharedAccessSignature "

// ErrMalformed is returned (wrapped) by Parse for anything that is not a well-formed token.
var ErrMalformed = errors.New("malformed shared access signature")

// Token is a parsed shared access signature.
type Token struct {
	// Resource is the decoded sr field, e.g. "hub.example/devices/d1/modules/m1".
	Resource string
	// RawResource is the sr field exactly as it appeared in the token (still URL-encoded).
	RawResource string
	// Signature is the decoded HMAC.
	Signature []byte
	// Expiry is the se field.
	Expiry time.Time
	// KeyName is the skn field (a shared access policy name), empty for device and module tokens.
	KeyName string
}

// Parse parses a token. The fields may come in any order; sr, sig and se are required, and
// unknown fields are refused as IoT Hub does.
func Parse(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return Token{}, fmt.Errorf("%w: missing %q prefix", ErrMalformed, strings.TrimSpace(Prefix))
	}
	var t Token
	seen := map[string]bool{}
	for _, field := range strings.Split(rest, "&") {
		k, v, ok := strings.Cut(field, "=")
		if !ok || v == "" {
			return Token{}, fmt.Errorf("%w: field %q has no value", ErrMalformed, k)
		}
		if seen[k] {
			return Token{}, fmt.Errorf("%w: duplicate field %q", ErrMalformed, k)
		}
		seen[k] = true
		// PathUnescape, not QueryUnescape: a literal '+' in a base64 signature must stay '+'.
		dv, err := url.PathUnescape(v)
		if err != nil {
			return Token{}, fmt.Errorf("%w: field %q: %w", ErrMalformed, k, err)
		}
		switch k {
		case "sr":
			t.RawResource, t.Resource = v, dv
		case "sig":
			sig, err := base64.StdEncoding.DecodeString(dv)
			if err != nil {
				return Token{}, fmt.Errorf("%w: sig is not base64: %w", ErrMalformed, err)
			}
			t.Signature = sig
		case "se":
			se, err := strconv.ParseInt(dv, 10, 64)
			if err != nil {
				return Token{}, fmt.Errorf("%w: se is not an integer: %w", ErrMalformed, err)
			}
			t.Expiry = time.Unix(se, 0)
		case "skn":
			t.KeyName = dv
		default:
			return Token{}, fmt.Errorf("%w: unknown field %q", ErrMalformed, k)
		}
	}
	for _, k := range []string{"sr", "sig", "se"} {
		if !seen[k] {
			return Token{}, fmt.Errorf("%w: missing %s", ErrMalformed, k)
		}
	}
	return t, nil
}

// Verify reports whether the token's signature was made with key. It does not look at the
// expiry or the resource: callers check those against what they expect.
func (t Token) Verify(key []byte) bool {
	se := strconv.FormatInt(t.Expiry.Unix(), 10)
	candidates := []string{t.RawResource, url.QueryEscape(t.Resource), lowerHex(url.QueryEscape(t.Resource))}
	ok := false
	for i, c := range candidates {
		if i > 0 && c == candidates[i-1] {
			continue
		}
		// Keep going after a match so the time spent does not depend on which form matched.
		if hmac.Equal(mac(key, c+"\n"+se), t.Signature) {
			ok = true
		}
	}
	return ok
}

// Sign returns the base64 HMAC-SHA256 of data under key, as the workload API's sign call does.
func Sign(key, data []byte) string {
	h := hmac.New(sha256.New, key)
	h.Write(data)
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// New mints a token for resource (not yet URL-encoded) that expires at expiry. keyName is
// the policy name for service tokens and empty for device and module tokens.
func New(key []byte, resource, keyName string, expiry time.Time) string {
	sr := url.QueryEscape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := base64.StdEncoding.EncodeToString(mac(key, sr+"\n"+se))
	s := Prefix + "sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se
	if keyName != "" {
		s += "&skn=" + url.QueryEscape(keyName)
	}
	return s
}

// Resource returns the token resource of a device ({hub}/devices/{d}) or, when moduleID is set,
// of a module ({hub}/devices/{d}/modules/{m}).
func Resource(hub, deviceID, moduleID string) string {
	r := hub + "/devices/" + deviceID
	if moduleID != "" {
		r += "/modules/" + moduleID
	}
	return r
}

func mac(key []byte, s string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(s))
	return h.Sum(nil)
}

// lowerHex lower-cases the hex digits of percent escapes, the form some C clients produce.
func lowerHex(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1] = lower(b[i+1])
			b[i+2] = lower(b[i+2])
		}
	}
	return string(b)
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}
