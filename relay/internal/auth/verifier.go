package auth

import (
	"container/list"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// The reasons [Verifier.Check] refuses a request. Every error it returns
// wraps exactly one of them; test with errors.Is. Messages never contain a
// password, and do not tell an unknown user from a wrong password.
var (
	// ErrNoCredentials: no Authorization header, or a scheme other than
	// Digest and Basic. Answer with a challenge; not a failed attempt.
	ErrNoCredentials = errors.New("auth: no credentials")
	// ErrMalformed: the header cannot be parsed, lacks a required Digest
	// parameter, or asks for something unsupported (algorithm other than
	// MD5, qop=auth-int, userhash).
	ErrMalformed = errors.New("auth: malformed or unsupported Authorization header")
	// ErrBadCredentials: unknown user, wrong password or response, wrong
	// realm, a nonce this relay did not issue, or a uri parameter that does
	// not name the requested resource.
	ErrBadCredentials = errors.New("auth: bad credentials")
	// ErrStale: a correct Digest answer to a nonce that has expired. Answer
	// with Challenge(secure, true); not a failed attempt.
	ErrStale = errors.New("auth: stale nonce")
	// ErrReplay: a qop=auth nonce count not above the last one accepted for
	// that nonce, i.e. a captured request sent again.
	ErrReplay = errors.New("auth: replayed nonce count")
	// ErrBasicInsecure: Basic credentials on a connection without TLS. They
	// are refused even when correct, so that the password is not sent in
	// clear text again; count it as a failed attempt.
	ErrBasicInsecure = errors.New("auth: Basic authentication refused without TLS")
)

// userError attaches the user name a request claimed to a refusal, for
// logging, without putting it in the message.
type userError struct {
	user string
	err  error
}

func (e *userError) Error() string { return e.err.Error() }
func (e *userError) Unwrap() error { return e.err }

// UserOf returns the user name the refused request claimed, or "" if the
// error carries none (e.g. [ErrNoCredentials], an unparseable header). The
// name is whatever the client sent, clipped to 64 characters of valid
// UTF-8; it need not be a configured user. Log it quoted (%q).
func UserOf(err error) string {
	var ue *userError
	if errors.As(err, &ue) {
		return ue.user
	}
	return ""
}

func withUser(user string, err error) error {
	if user == "" {
		return err
	}
	if utf8.RuneCountInString(user) > maxNameRunes || !utf8.ValidString(user) {
		user = strings.ToValidUTF8(user, "\uFFFD")
		if r := []rune(user); len(r) > maxNameRunes {
			user = string(r[:maxNameRunes])
		}
	}
	return &userError{user: user, err: err}
}

const (
	defaultNonceTTL = 5 * time.Minute

	nonceTSLen   = 8
	nonceRandLen = 16
	nonceMACLen  = 16
	nonceLen     = nonceTSLen + nonceRandLen + nonceMACLen

	minKeyLen = 16
	genKeyLen = 32

	// defaultMaxCounts bounds the per-nonce nc table. Only requests that
	// verified add entries, so only configured users can fill it.
	defaultMaxCounts = 10000

	// A Basic check costs ~250 ms of CPU (bcrypt 12) or m KiB (argon2id).
	// Successful checks are remembered for basicCacheTTL so the RTSP
	// requests of one RTSPS session, each carrying the header, pay once.
	basicCacheTTL = time.Minute
	maxBasicCache = 1024

	// maxHashChecks bounds concurrent bcrypt/argon2id runs per Verifier so
	// that a flood of Basic attempts from many addresses queues instead of
	// taking every core (or, for argon2id, memory).
	maxHashChecks = 4
)

// Verifier checks Authorization headers against a fixed set of users.
//
// Set the exported fields, then call Initialize once; Initialize copies
// them, so later changes have no effect (build a new Verifier to reload the
// config). After Initialize, all methods are safe for concurrent use. A
// Verifier must not be copied after Initialize.
type Verifier struct {
	// Realm is the authentication realm, required. It is hashed into every
	// HA1, so changing it invalidates all users' HA1. It must not contain
	// '"', '\' or control characters.
	Realm string
	// Users are the accounts; may be empty (then every check fails). Each
	// must pass [ValidateUser] and names must be unique.
	Users []User
	// NonceTTL is how long a nonce is fresh; an older one is stale. Zero
	// means 5 minutes.
	NonceTTL time.Duration
	// Now returns the current time; nil means time.Now. Tests inject a clock.
	Now func() time.Time
	// Key signs nonces (HMAC-SHA256), at least 16 bytes. Nil means 32 random
	// bytes from crypto/rand at Initialize, which is fine for one process:
	// after a restart a client still holding an old nonce is refused once
	// ([ErrBadCredentials], the nonce is no longer ours) and answers the new
	// challenge. Share a key only between relays that should accept each
	// other's nonces. The slice is copied.
	Key []byte

	// Set by Initialize, read-only afterwards.
	realm     string
	users     map[string]User
	decoy     User // checked for unknown Basic users so timing does not tell
	ttl       time.Duration
	now       func() time.Time
	key       []byte
	hashSlots chan struct{}
	maxCounts int // tests lower it before Initialize; 0 means defaultMaxCounts

	mu sync.Mutex
	// counts maps a nonce to the highest nc accepted with it; countOrder
	// holds the same entries oldest first. countFloor (Unix ns): untracked
	// nonces issued at or before it are treated as stale, because their
	// entry may have been evicted.
	counts     map[string]*nonceCount
	countOrder list.List
	countFloor int64
	// basic remembers successful Basic checks, keyed by
	// HMAC-SHA256(key, name:password) so the table holds no fast hash of a
	// password that outlives the key.
	basic map[[sha256.Size]byte]basicEntry
}

type nonceCount struct {
	nonce  string
	issued int64 // Unix ns, from the nonce
	last   uint32
	elem   *list.Element
}

type basicEntry struct {
	user    string
	expires time.Time
}

// Initialize validates the fields and prepares the Verifier. It returns an
// error naming the offending field or user.
func (v *Verifier) Initialize() error {
	if err := validateRealm(v.Realm); err != nil {
		return fmt.Errorf("auth: realm: %w", err)
	}
	if v.NonceTTL < 0 {
		return errors.New("auth: nonce TTL must not be negative")
	}
	users := make(map[string]User, len(v.Users))
	for i, u := range v.Users {
		if err := ValidateUser(u); err != nil {
			return fmt.Errorf("auth: users[%d] %q: %w", i, u.Name, err)
		}
		if _, dup := users[u.Name]; dup {
			return fmt.Errorf("auth: users[%d] %q: name: duplicate", i, u.Name)
		}
		users[u.Name] = u
	}
	var key []byte
	switch {
	case len(v.Key) == 0:
		key = make([]byte, genKeyLen)
		if _, err := rand.Read(key); err != nil {
			return fmt.Errorf("auth: nonce key: %w", err)
		}
	case len(v.Key) < minKeyLen:
		return fmt.Errorf("auth: nonce key must be at least %d bytes", minKeyLen)
	default:
		key = append([]byte(nil), v.Key...)
	}

	v.realm = v.Realm
	v.users = users
	v.decoy = User{}
	if len(v.Users) > 0 {
		v.decoy = v.Users[0]
	}
	v.ttl = v.NonceTTL
	if v.ttl == 0 {
		v.ttl = defaultNonceTTL
	}
	v.now = v.Now
	if v.now == nil {
		v.now = time.Now
	}
	v.key = key
	v.hashSlots = make(chan struct{}, maxHashChecks)
	if v.maxCounts <= 0 {
		v.maxCounts = defaultMaxCounts
	}
	v.mu.Lock()
	v.counts = make(map[string]*nonceCount)
	v.countOrder.Init()
	v.countFloor = 0
	v.basic = make(map[[sha256.Size]byte]basicEntry)
	v.mu.Unlock()
	return nil
}

func (v *Verifier) mustBeInitialized() {
	if v.key == nil {
		panic("auth: Verifier used before Initialize")
	}
}

// Challenge returns the WWW-Authenticate values for a 401 answer, each to
// be sent as its own header, in order:
//
//	Digest realm="<realm>", nonce="<new nonce>", algorithm=MD5, qop="auth"
//
// with ", stale=TRUE" appended when stale is true (after [ErrStale]), then
//
//	Basic realm="<realm>"
//
// only when secure (the connection uses TLS). Digest comes first because
// clients that take the first scheme they know should pick it. Every call
// makes a fresh nonce.
func (v *Verifier) Challenge(secure, stale bool) []string {
	v.mustBeInitialized()
	d := `Digest realm="` + v.realm + `", nonce="` + v.newNonce(v.now()) + `", algorithm=MD5, qop="auth"`
	if stale {
		d += ", stale=TRUE"
	}
	out := []string{d}
	if secure {
		out = append(out, `Basic realm="`+v.realm+`"`)
	}
	return out
}

// newNonce returns base64url(ts || random || HMAC-SHA256(key, ts||random)[:16]).
func (v *Verifier) newNonce(now time.Time) string {
	var b [nonceLen]byte
	binary.BigEndian.PutUint64(b[:nonceTSLen], uint64(now.UnixNano()))
	// crypto/rand.Read does not fail (it crashes the program instead).
	_, _ = rand.Read(b[nonceTSLen : nonceTSLen+nonceRandLen])
	return v.sealNonce(b)
}

func (v *Verifier) sealNonce(b [nonceLen]byte) string {
	mac := hmac.New(sha256.New, v.key)
	mac.Write(b[:nonceTSLen+nonceRandLen])
	copy(b[nonceTSLen+nonceRandLen:], mac.Sum(nil))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// openNonce returns the issue time (Unix ns) of a nonce we signed.
func (v *Verifier) openNonce(n string) (int64, bool) {
	if len(n) != base64.RawURLEncoding.EncodedLen(nonceLen) {
		return 0, false
	}
	// Strict: exactly one string per nonce, so the nc table cannot be
	// sidestepped by re-encoding.
	b, err := base64.RawURLEncoding.Strict().DecodeString(n)
	if err != nil || len(b) != nonceLen {
		return 0, false
	}
	mac := hmac.New(sha256.New, v.key)
	mac.Write(b[:nonceTSLen+nonceRandLen])
	if !hmac.Equal(mac.Sum(nil)[:nonceMACLen], b[nonceTSLen+nonceRandLen:]) {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(b[:nonceTSLen])), true
}

// expired reports whether a nonce issued at issued (Unix ns) is stale at
// now. A nonce from the future (the clock stepped back) is fresh unless it
// is more than a TTL ahead.
func (v *Verifier) expired(issued int64, now time.Time) bool {
	age := now.Sub(time.Unix(0, issued))
	return age > v.ttl || age < -v.ttl
}

// Check verifies one request's Authorization header value and returns the
// authenticated user name.
//
// method is the request method ("DESCRIBE"); uri is the request URI as on
// the request line ("rtsp://host:8554/door", "/door", ...); secure tells
// whether the connection uses TLS. A refusal wraps exactly one of
// [ErrNoCredentials], [ErrMalformed], [ErrBadCredentials], [ErrStale],
// [ErrReplay], [ErrBasicInsecure]; [UserOf] extracts the claimed user name
// for logging.
//
// Digest checks are cheap. A Basic check runs bcrypt or argon2id unless the
// same user and password succeeded within the last minute; at most 4 such
// runs proceed at once per Verifier, others wait.
func (v *Verifier) Check(method, uri, authorization string, secure bool) (string, error) {
	v.mustBeInitialized()
	scheme, rest := splitScheme(authorization)
	switch {
	case scheme == "":
		return "", fmt.Errorf("%w: no Authorization header", ErrNoCredentials)
	case strings.EqualFold(scheme, "Digest"):
		return v.checkDigest(method, uri, rest)
	case strings.EqualFold(scheme, "Basic"):
		return v.checkBasic(rest, secure)
	default:
		return "", fmt.Errorf("%w: unsupported scheme", ErrNoCredentials)
	}
}

func (v *Verifier) checkDigest(method, reqURI, rest string) (string, error) {
	p, err := parseParams(rest)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	name := p["username"]
	malformed := func(format string, args ...any) (string, error) {
		return "", withUser(name, fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...))
	}
	bad := func(reason string) (string, error) {
		return "", withUser(name, fmt.Errorf("%w: %s", ErrBadCredentials, reason))
	}

	if _, ok := p["username*"]; ok {
		return malformed("username* (RFC 7616 extended notation) is not supported")
	}
	if strings.EqualFold(p["userhash"], "true") {
		return malformed("userhash is not supported")
	}
	for _, k := range []string{"username", "realm", "nonce", "uri", "response"} {
		if p[k] == "" {
			return malformed("missing digest parameter %q", k)
		}
	}
	if alg, ok := p["algorithm"]; ok && !strings.EqualFold(alg, "MD5") {
		return malformed("algorithm %s is not supported, only MD5", knownValue(alg,
			"SHA-256", "SHA-512-256", "MD5-sess", "SHA-256-sess", "SHA-512-256-sess"))
	}
	qop, hasQop := p["qop"]
	var nc uint32
	switch {
	case !hasQop:
		// RFC 2069 form.
	case strings.EqualFold(qop, "auth"):
		ncStr := p["nc"]
		if len(ncStr) != 8 {
			return malformed("qop=auth needs nc of 8 hex digits")
		}
		n, err := strconv.ParseUint(ncStr, 16, 32)
		if err != nil {
			return malformed("qop=auth needs nc of 8 hex digits")
		}
		nc = uint32(n)
		if p["cnonce"] == "" {
			return malformed("qop=auth needs cnonce")
		}
	case strings.EqualFold(qop, "auth-int"):
		return malformed("qop=auth-int is not supported, only auth")
	default:
		return malformed("qop %s is not supported, only auth", knownValue(qop))
	}

	if p["realm"] != v.realm {
		return bad("realm does not match")
	}
	nonce := p["nonce"]
	issued, ok := v.openNonce(nonce)
	if !ok {
		return bad("nonce not issued by this relay")
	}
	if !sameResource(p["uri"], reqURI) {
		return bad("uri parameter does not match the request URI")
	}

	u, known := v.users[name]
	ha1 := u.HA1
	if !known {
		// Do the same work for an unknown user.
		ha1 = "00000000000000000000000000000000"
	}
	var want string
	if hasQop {
		want = digestResponse(ha1, nonce, p["nc"], p["cnonce"], qop, method, p["uri"])
	} else {
		want = digestResponse2069(ha1, nonce, method, p["uri"])
	}
	got := strings.ToLower(p["response"])
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 || !known {
		return bad("wrong user name or password")
	}

	now := v.now()
	if v.expired(issued, now) {
		return "", withUser(name, fmt.Errorf("%w: nonce expired", ErrStale))
	}
	if hasQop {
		if err := v.recordCount(nonce, issued, nc, now); err != nil {
			return "", withUser(name, err)
		}
	}
	return name, nil
}

// knownValue quotes v for an error message if it is one of known (case
// insensitively), and says "of another kind" otherwise: messages do not
// echo arbitrary client text, which could be a misplaced secret.
func knownValue(v string, known ...string) string {
	for _, k := range known {
		if strings.EqualFold(v, k) {
			return strconv.Quote(k)
		}
	}
	return "of another kind"
}

// recordCount accepts nc for nonce if it is above the last one accepted.
func (v *Verifier) recordCount(nonce string, issued int64, nc uint32, now time.Time) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	// Entries are roughly in issue order; drop the expired ones in front.
	for e := v.countOrder.Front(); e != nil; e = v.countOrder.Front() {
		c := e.Value.(*nonceCount)
		if !v.expired(c.issued, now) {
			break
		}
		v.countOrder.Remove(e)
		delete(v.counts, c.nonce)
	}
	if c, ok := v.counts[nonce]; ok {
		if nc <= c.last {
			return fmt.Errorf("%w: nc %08x not above %08x", ErrReplay, nc, c.last)
		}
		c.last = nc
		return nil
	}
	if issued <= v.countFloor {
		// Its entry may have been evicted: we no longer know which counts
		// were used. A new nonce costs an honest client one round trip.
		return fmt.Errorf("%w: nonce no longer tracked", ErrStale)
	}
	if nc == 0 {
		return fmt.Errorf("%w: nc must start at 00000001", ErrReplay)
	}
	if v.countOrder.Len() >= v.maxCounts {
		e := v.countOrder.Front()
		c := e.Value.(*nonceCount)
		v.countOrder.Remove(e)
		delete(v.counts, c.nonce)
		if c.issued > v.countFloor {
			v.countFloor = c.issued
		}
	}
	c := &nonceCount{nonce: nonce, issued: issued, last: nc}
	c.elem = v.countOrder.PushBack(c)
	v.counts[nonce] = c
	return nil
}

func (v *Verifier) checkBasic(cred string, secure bool) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(cred)
	}
	if err != nil {
		return "", fmt.Errorf("%w: Basic credentials are not base64", ErrMalformed)
	}
	name, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		// No user name to report: without ':' it may all be a password.
		return "", fmt.Errorf("%w: Basic credentials lack ':'", ErrMalformed)
	}
	if !secure {
		return "", withUser(name, ErrBasicInsecure)
	}
	u, known := v.users[name]
	if known && v.cachedBasic(name, pass) {
		return name, nil
	}
	target := u
	if !known {
		// Spend the same time as for a real user, so that response time
		// does not reveal which names exist.
		target = v.decoy
	}
	matched := false
	if target.Hash != "" {
		v.hashSlots <- struct{}{}
		matched = CheckPassword(target, pass)
		<-v.hashSlots
	}
	if !known || !matched {
		return "", withUser(name, fmt.Errorf("%w: wrong user name or password", ErrBadCredentials))
	}
	v.cacheBasic(name, pass)
	return name, nil
}

func (v *Verifier) basicKey(name, pass string) [sha256.Size]byte {
	mac := hmac.New(sha256.New, v.key)
	mac.Write([]byte(name + ":" + pass))
	var k [sha256.Size]byte
	copy(k[:], mac.Sum(nil))
	return k
}

func (v *Verifier) cachedBasic(name, pass string) bool {
	k := v.basicKey(name, pass)
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.basic[k]
	if !ok {
		return false
	}
	if !now.Before(e.expires) {
		delete(v.basic, k)
		return false
	}
	return e.user == name
}

func (v *Verifier) cacheBasic(name, pass string) {
	k := v.basicKey(name, pass)
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.basic) >= maxBasicCache {
		for kk, e := range v.basic {
			if !now.Before(e.expires) {
				delete(v.basic, kk)
			}
		}
	}
	if len(v.basic) >= maxBasicCache {
		// Still full of live entries: drop the one expiring first.
		var oldest [sha256.Size]byte
		var oldestExp time.Time
		first := true
		for kk, e := range v.basic {
			if first || e.expires.Before(oldestExp) {
				oldest, oldestExp, first = kk, e.expires, false
			}
		}
		delete(v.basic, oldest)
	}
	v.basic[k] = basicEntry{user: name, expires: now.Add(basicCacheTTL)}
}

// digestResponse is the RFC 2617 qop=auth response:
// MD5(HA1:nonce:nc:cnonce:qop:MD5(method:uri)).
func digestResponse(ha1, nonce, nc, cnonce, qop, method, uri string) string {
	return md5Hex(ha1 + ":" + nonce + ":" + nc + ":" + cnonce + ":" + qop + ":" + md5Hex(method+":"+uri))
}

// digestResponse2069 is the RFC 2069 response (no qop):
// MD5(HA1:nonce:MD5(method:uri)).
func digestResponse2069(ha1, nonce, method, uri string) string {
	return md5Hex(ha1 + ":" + nonce + ":" + md5Hex(method+":"+uri))
}

// sameResource reports whether the digest uri parameter designates the
// request URI: equal, or both absolute URLs or absolute paths with the same
// path (ignoring one trailing "/") and query. Clients differ: some send the
// full URL, some only the path; the host is not compared because it is the
// client's view of our address either way, and the digest is bound to our
// realm and nonce already.
func sameResource(param, reqURI string) bool {
	if param == reqURI {
		return true
	}
	pp, pq, ok1 := resourceOf(param)
	rp, rq, ok2 := resourceOf(reqURI)
	return ok1 && ok2 && pp == rp && pq == rq
}

func resourceOf(s string) (path, query string, ok bool) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" {
		return "", "", false
	}
	if u.Scheme == "" {
		if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") {
			return "", "", false
		}
	} else if u.Host == "" {
		return "", "", false
	}
	return strings.TrimSuffix(u.Path, "/"), u.RawQuery, true
}
