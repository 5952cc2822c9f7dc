package iothub

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ConnectionString is a parsed IoT Hub service connection string.
type ConnectionString struct {
	HostName string
	KeyName  string
	Key      []byte // the decoded SharedAccessKey
}

// ParseConnectionString parses a service connection string
// "HostName=..;SharedAccessKeyName=..;SharedAccessKey=..". Errors never
// contain the key.
func ParseConnectionString(s string) (*ConnectionString, error) {
	var cs ConnectionString
	var key string
	for part := range strings.SplitSeq(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		v = strings.TrimSpace(v)
		if !ok {
			return nil, errors.New("malformed: expected Key=Value pairs separated by ';'")
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "hostname":
			cs.HostName = v
		case "sharedaccesskeyname":
			cs.KeyName = v
		case "sharedaccesskey":
			key = v
		case "deviceid", "moduleid":
			return nil, fmt.Errorf("this is a device or module connection string (it has %s); the relay needs a service policy's, e.g. service or iothubowner", k)
		}
	}
	switch {
	case cs.HostName == "":
		return nil, errors.New("missing HostName")
	case cs.KeyName == "":
		return nil, errors.New("missing SharedAccessKeyName")
	case key == "":
		return nil, errors.New("missing SharedAccessKey")
	}
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return nil, errors.New("SharedAccessKey is not valid base64")
	}
	cs.Key = b
	return &cs, nil
}

// SignSAS returns a shared access signature for resource (for the service
// API, the hub's host name) valid until expiry:
//
//	SharedAccessSignature sr=<enc(resource)>&sig=<enc(sig)>&se=<unix expiry>[&skn=<keyName>]
//
// where sig = base64(HMAC-SHA256(key, enc(resource) + "\n" + expiry)) and
// enc is JavaScript's strict encodeURIComponent, as Azure's SDKs do.
func SignSAS(resource, keyName string, key []byte, expiry time.Time) string {
	sr := encodeComponent(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(sr + "\n" + se))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	tok := "SharedAccessSignature sr=" + sr + "&sig=" + encodeComponent(sig) + "&se=" + se
	if keyName != "" {
		tok += "&skn=" + encodeComponent(keyName)
	}
	return tok
}

// encodeComponent percent-encodes everything but A-Z a-z 0-9 - _ . ~.
func encodeComponent(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// DefaultSASTTL is the lifetime of the signatures [SAS] mints.
const DefaultSASTTL = time.Hour

// SAS authorizes requests with shared access signatures signed by a
// service policy key. It caches its signature and signs a new one when
// less than a quarter of TTL remains. It is safe for concurrent use.
type SAS struct {
	// Resource is the signed resource, for the service API the hub's host name.
	Resource string
	KeyName  string
	Key      []byte
	// TTL is each signature's lifetime; zero means DefaultSASTTL.
	TTL time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	token   string    // guarded by mu
	expires time.Time // guarded by mu
}

// NewSAS returns a SAS authorizer for a parsed service connection string.
func NewSAS(cs *ConnectionString) *SAS {
	return &SAS{Resource: cs.HostName, KeyName: cs.KeyName, Key: cs.Key}
}

// Authorization returns the current signature, signing a new one when the
// cached one is missing or near its expiry.
func (s *SAS) Authorization(context.Context) (string, error) {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	ttl := s.TTL
	if ttl <= 0 {
		ttl = DefaultSASTTL
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == "" || s.expires.Sub(now) < ttl/4 {
		s.expires = now.Add(ttl).Truncate(time.Second)
		s.token = SignSAS(s.Resource, s.KeyName, s.Key, s.expires)
	}
	return s.token, nil
}
