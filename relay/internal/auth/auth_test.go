package auth

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	gsauth "github.com/bluenviron/gortsplib/v4/pkg/auth"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"golang.org/x/crypto/bcrypt"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

const testRealm = "relay@test"

// Reference hashes made outside Go, so that parsing is checked against
// other implementations:
//
//	echo -n "Circle Of Life" | argon2 somesaltvalue -id -t 2 -m 10 -p 1 -e   (libargon2 CLI)
//	echo -n "Circle Of Life" | argon2 somesaltvalue -id -t 3 -m 16 -p 2 -e
//	htpasswd -nbB -C 4 mufasa "Circle Of Life"                               (Apache, $2y$)
//	htpasswd -nbB -C 5 carol "s3cret:with:colons"
const (
	argonRef1MiB  = "$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHR2YWx1ZQ$DCXma6LJY8Aa8AE4tNXM7eNZaGmbGwDNOpbs0MmDdBs"
	argonRef64MiB = "$argon2id$v=19$m=65536,t=3,p=2$c29tZXNhbHR2YWx1ZQ$b0CHxK8hPAAOzttoj1/5UJFHitPF8rESva+QaMXgE6Y"
	bcryptRef2y   = "$2y$04$UFoxB7x/w6OMDRy/nTAnPOmgziTvIpqYI8zHQAsNTzgoqJAiaFItq"
	bcryptColons  = "$2y$05$mDk4DcWmbZva7TUePjyaNu7tqB6bWkT98sid7kMeTrUUrP1HQAFNG"
	refPassword   = "Circle Of Life"
	alicePassword = "wonderland"
	carolPassword = "s3cret:with:colons"
)

// md5h is the test's own MD5-hex, independent of the package's.
func md5h(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

var (
	aliceHashOnce sync.Once
	aliceHash     string
)

// testUsers: alice (bcrypt made by x/crypto), mufasa (htpasswd $2y$), bob
// (libargon2 argon2id), carol (password with colons).
func testUsers(t testing.TB) []User {
	t.Helper()
	aliceHashOnce.Do(func() {
		h, err := bcrypt.GenerateFromPassword([]byte(alicePassword), bcrypt.MinCost)
		if err != nil {
			panic(err)
		}
		aliceHash = string(h)
	})
	mk := func(name, pass, hash string) User {
		return User{Name: name, HA1: md5h(name + ":" + testRealm + ":" + pass), Hash: hash}
	}
	return []User{
		mk("alice", alicePassword, aliceHash),
		mk("mufasa", refPassword, bcryptRef2y),
		mk("bob", refPassword, argonRef1MiB),
		mk("carol", carolPassword, bcryptColons),
	}
}

// newClock returns the tests' injectable time source.
func newClock() *testutil.Clock {
	return testutil.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
}

func newVerifier(t testing.TB, clk *testutil.Clock) *Verifier {
	t.Helper()
	v := &Verifier{Realm: testRealm, Users: testUsers(t)}
	if clk != nil {
		v.Now = clk.Now
	}
	if err := v.Initialize(); err != nil {
		t.Fatal(err)
	}
	return v
}

var nonceRE = regexp.MustCompile(`nonce="([^"]*)"`)

func nonceOf(t testing.TB, challenge string) string {
	t.Helper()
	m := nonceRE.FindStringSubmatch(challenge)
	if m == nil {
		t.Fatalf("no nonce in %q", challenge)
	}
	return m[1]
}

func freshNonce(t testing.TB, v *Verifier) string {
	t.Helper()
	return nonceOf(t, v.Challenge(false, false)[0])
}

// digestReq is a tiny client-side Digest implementation, written from the
// RFCs independently of the package code.
type digestReq struct {
	user, realm, pass string
	method, uri       string
	nonce             string
	qop, nc, cnonce   string // qop "" means the RFC 2069 form
	algorithm         string // "" means omitted
	extra             string // appended verbatim
}

func (d digestReq) header() string {
	ha1 := md5h(d.user + ":" + d.realm + ":" + d.pass)
	ha2 := md5h(d.method + ":" + d.uri)
	var resp string
	if d.qop == "" {
		resp = md5h(ha1 + ":" + d.nonce + ":" + ha2)
	} else {
		resp = md5h(ha1 + ":" + d.nonce + ":" + d.nc + ":" + d.cnonce + ":" + d.qop + ":" + ha2)
	}
	s := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s"`,
		d.user, d.realm, d.nonce, d.uri, resp)
	if d.algorithm != "" {
		s += ", algorithm=" + d.algorithm
	}
	if d.qop != "" {
		s += fmt.Sprintf(`, qop=%s, nc=%s, cnonce="%s"`, d.qop, d.nc, d.cnonce)
	}
	return s + d.extra
}

func aliceReq(nonce string) digestReq {
	return digestReq{
		user: "alice", realm: testRealm, pass: alicePassword,
		method: "DESCRIBE", uri: "rtsp://127.0.0.1:8554/door",
		nonce: nonce, qop: "auth", nc: "00000001", cnonce: "0a4f113b",
	}
}

func basicHeader(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// sentinels are the errors Check may wrap.
var sentinels = []error{ErrNoCredentials, ErrMalformed, ErrBadCredentials, ErrStale, ErrReplay, ErrBasicInsecure}

// checkErr fails unless err wraps want (nil: no error) and no other sentinel.
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			t.Fatalf("error %v wraps both %v and %v", err, want, s)
		}
	}
}

func TestRFC2617Vector(t *testing.T) {
	// RFC 2617 section 3.5.
	ha1 := computeHA1("Mufasa", "testrealm@host.com", "Circle Of Life")
	if want := "939e7578ed9e3c518a452acee763bce9"; ha1 != want {
		t.Fatalf("HA1 = %s, want %s", ha1, want)
	}
	got := digestResponse(ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001", "0a4f113b", "auth", "GET", "/dir/index.html")
	if want := "6629fae49393a05397450978507c4ef1"; got != want {
		t.Fatalf("response = %s, want %s", got, want)
	}
	// The RFC 2069 form, against the test's own implementation.
	d := digestReq{user: "Mufasa", realm: "testrealm@host.com", pass: "Circle Of Life",
		method: "GET", uri: "/dir/index.html", nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093"}
	if !strings.Contains(d.header(), digestResponse2069(ha1, d.nonce, d.method, d.uri)) {
		t.Fatal("RFC 2069 response differs from the independent computation")
	}
}

func TestChallenge(t *testing.T) {
	v := newVerifier(t, nil)
	digestRE := regexp.MustCompile(`^Digest realm="relay@test", nonce="[A-Za-z0-9_-]{54}", algorithm=MD5, qop="auth"$`)
	tests := []struct {
		secure, stale bool
		wantBasic     bool
	}{
		{false, false, false},
		{true, false, true},
		{false, true, false},
		{true, true, true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("secure=%v,stale=%v", tc.secure, tc.stale), func(t *testing.T) {
			ch := v.Challenge(tc.secure, tc.stale)
			d := ch[0]
			if tc.stale {
				var ok bool
				d, ok = strings.CutSuffix(d, ", stale=TRUE")
				if !ok {
					t.Fatalf("no stale=TRUE in %q", ch[0])
				}
			}
			if !digestRE.MatchString(d) {
				t.Fatalf("Digest challenge %q", ch[0])
			}
			wantLen := 1
			if tc.wantBasic {
				wantLen = 2
			}
			if len(ch) != wantLen {
				t.Fatalf("got %d values %q, want %d", len(ch), ch, wantLen)
			}
			if tc.wantBasic && ch[1] != `Basic realm="relay@test"` {
				t.Fatalf("Basic challenge %q", ch[1])
			}
		})
	}
	if a, b := freshNonce(t, v), freshNonce(t, v); a == b {
		t.Fatal("two challenges share a nonce")
	}
}

func TestDigest(t *testing.T) {
	clk := newClock()
	v := newVerifier(t, clk)
	other := &Verifier{Realm: testRealm, Now: clk.Now}
	if err := other.Initialize(); err != nil {
		t.Fatal(err)
	}
	const full = "rtsp://127.0.0.1:8554/door"
	responseRE := regexp.MustCompile(`response="([0-9a-f]+)"`)

	tests := []struct {
		name     string
		mod      func(d *digestReq)
		edit     func(h string) string
		reqURI   string // default full
		wantUser string // default alice when wantErr is nil
		wantErr  error
	}{
		{name: "qop auth"},
		{name: "RFC 2069 form", mod: func(d *digestReq) { d.qop = "" }},
		{name: "algorithm MD5", mod: func(d *digestReq) { d.algorithm = "MD5" }},
		{name: "algorithm quoted lower case", mod: func(d *digestReq) { d.algorithm = `"md5"` }},
		{name: "qop quoted", mod: func(d *digestReq) { d.qop = "auth" }, edit: func(h string) string {
			return strings.Replace(h, "qop=auth", `qop="auth"`, 1)
		}},
		{name: "argon2id user", mod: func(d *digestReq) { d.user, d.pass = "bob", refPassword }, wantUser: "bob"},
		{name: "lower-case scheme", edit: func(h string) string { return "digest" + strings.TrimPrefix(h, "Digest") }},
		{name: "upper-case response", edit: func(h string) string {
			return responseRE.ReplaceAllStringFunc(h, strings.ToUpper)
		}},
		{name: "extra whitespace, unknown params, commas and escapes in quotes", edit: func(h string) string {
			return "  Digest \t" + strings.ReplaceAll(strings.TrimPrefix(h, "Digest "), ", ", " ,\t ,") +
				` , opaque = "a,b \"c\" \\d" ,foo=bar,  `
		}},
		{name: "unquoted values", edit: func(h string) string { return strings.ReplaceAll(h, `"`, "") }},
		{name: "path uri, full request URI", mod: func(d *digestReq) { d.uri = "/door" }},
		{name: "full uri, path request URI", reqURI: "/door"},
		{name: "different host, same path", mod: func(d *digestReq) { d.uri = "rtsp://relay.example.com/door" }},
		{name: "trailing slash", mod: func(d *digestReq) { d.uri = full + "/" }},
		{name: "track URL", mod: func(d *digestReq) { d.uri = full + "/trackID=0" }, reqURI: full + "/trackID=0"},
		{name: "wrong password", mod: func(d *digestReq) { d.pass = "wonderland!" }, wantErr: ErrBadCredentials},
		{name: "unknown user", mod: func(d *digestReq) { d.user = "mallory" }, wantErr: ErrBadCredentials},
		{name: "user name is case-sensitive", mod: func(d *digestReq) { d.user = "Alice" }, wantErr: ErrBadCredentials},
		{name: "wrong realm", mod: func(d *digestReq) { d.realm = "other" }, wantErr: ErrBadCredentials},
		{name: "nonce from another key", mod: func(d *digestReq) { d.nonce = nonceOf(t, other.Challenge(false, false)[0]) }, wantErr: ErrBadCredentials},
		{name: "foreign nonce", mod: func(d *digestReq) { d.nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093" }, wantErr: ErrBadCredentials},
		{name: "tampered nonce", mod: func(d *digestReq) {
			b := []byte(d.nonce)
			b[3] ^= 1
			d.nonce = string(b)
		}, wantErr: ErrBadCredentials},
		{name: "method differs", mod: func(d *digestReq) { d.method = "PLAY" }, wantErr: ErrBadCredentials},
		{name: "base uri for a track request", reqURI: full + "/trackID=0", wantErr: ErrBadCredentials},
		{name: "other path", mod: func(d *digestReq) { d.uri = "/garage" }, wantErr: ErrBadCredentials},
		{name: "relative uri", mod: func(d *digestReq) { d.uri = "door" }, wantErr: ErrBadCredentials},
		{name: "other query", mod: func(d *digestReq) { d.uri = "/door?x=1" }, wantErr: ErrBadCredentials},
		{name: "nc zero", mod: func(d *digestReq) { d.nc = "00000000" }, wantErr: ErrReplay},
		{name: "SHA-256", mod: func(d *digestReq) { d.algorithm = "SHA-256" }, wantErr: ErrMalformed},
		{name: "MD5-sess", mod: func(d *digestReq) { d.algorithm = "MD5-sess" }, wantErr: ErrMalformed},
		{name: "auth-int", mod: func(d *digestReq) { d.qop = "auth-int" }, wantErr: ErrMalformed},
		{name: "unknown qop", mod: func(d *digestReq) { d.qop = "whatever" }, wantErr: ErrMalformed},
		{name: "empty nc", mod: func(d *digestReq) { d.nc = "" }, wantErr: ErrMalformed},
		{name: "short nc", mod: func(d *digestReq) { d.nc = "1" }, wantErr: ErrMalformed},
		{name: "non-hex nc", mod: func(d *digestReq) { d.nc = "0000000g" }, wantErr: ErrMalformed},
		{name: "signed nc", mod: func(d *digestReq) { d.nc = "+0000001" }, wantErr: ErrMalformed},
		{name: "empty cnonce", mod: func(d *digestReq) { d.cnonce = "" }, wantErr: ErrMalformed},
		{name: "no nc", edit: func(h string) string { return strings.Replace(h, "nc=00000001, ", "", 1) }, wantErr: ErrMalformed},
		{name: "no response", edit: func(h string) string { return responseRE.ReplaceAllString(h, "") }, wantErr: ErrMalformed},
		{name: "duplicate username", mod: func(d *digestReq) { d.extra = `, username="alice"` }, wantErr: ErrMalformed},
		{name: "unterminated quote", mod: func(d *digestReq) { d.extra = `, opaque="abc` }, wantErr: ErrMalformed},
		{name: "junk after value", mod: func(d *digestReq) { d.extra = `, opaque="abc" def` }, wantErr: ErrMalformed},
		{name: "userhash", mod: func(d *digestReq) { d.extra = `, userhash=true` }, wantErr: ErrMalformed},
		{name: "username*", mod: func(d *digestReq) { d.extra = `, username*=UTF-8''alice` }, wantErr: ErrMalformed},
		{name: "Digest without params", edit: func(string) string { return "Digest" }, wantErr: ErrMalformed},
		{name: "empty header", edit: func(string) string { return "" }, wantErr: ErrNoCredentials},
		{name: "blank header", edit: func(string) string { return " \t " }, wantErr: ErrNoCredentials},
		{name: "other scheme", edit: func(string) string { return "Bearer abc" }, wantErr: ErrNoCredentials},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := aliceReq(freshNonce(t, v))
			if tc.mod != nil {
				tc.mod(&d)
			}
			h := d.header()
			if tc.edit != nil {
				h = tc.edit(h)
			}
			reqURI := tc.reqURI
			if reqURI == "" {
				reqURI = full
			}
			user, err := v.Check("DESCRIBE", reqURI, h, false)
			checkErr(t, err, tc.wantErr)
			wantUser := ""
			if tc.wantErr == nil {
				wantUser = tc.wantUser
				if wantUser == "" {
					wantUser = "alice"
				}
			}
			if user != wantUser {
				t.Fatalf("user = %q, want %q", user, wantUser)
			}
		})
	}
}

func TestDigestErrorsDoNotTellUnknownUser(t *testing.T) {
	v := newVerifier(t, nil)
	d := aliceReq(freshNonce(t, v))
	d.pass = "nope"
	_, errWrongPass := v.Check("DESCRIBE", d.uri, d.header(), false)
	d = aliceReq(freshNonce(t, v))
	d.user = "mallory"
	_, errUnknown := v.Check("DESCRIBE", d.uri, d.header(), false)
	if errWrongPass.Error() != errUnknown.Error() {
		t.Fatalf("messages differ: %q vs %q", errWrongPass, errUnknown)
	}
	if UserOf(errWrongPass) != "alice" || UserOf(errUnknown) != "mallory" {
		t.Fatalf("UserOf = %q, %q", UserOf(errWrongPass), UserOf(errUnknown))
	}
	if strings.Contains(errUnknown.Error(), "mallory") {
		t.Fatalf("message names the user: %q", errUnknown)
	}
	if _, err := v.Check("DESCRIBE", "/", "", false); UserOf(err) != "" {
		t.Fatalf("UserOf(no credentials) = %q", UserOf(err))
	}
	if UserOf(nil) != "" || UserOf(errors.New("x")) != "" {
		t.Fatal("UserOf of a foreign error is not empty")
	}
}

func TestStale(t *testing.T) {
	clk := newClock()
	v := &Verifier{Realm: testRealm, Users: testUsers(t), Now: clk.Now, NonceTTL: time.Minute}
	if err := v.Initialize(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		age     time.Duration
		qop     string
		pass    string
		wantErr error
	}{
		{"fresh at TTL", time.Minute, "auth", alicePassword, nil},
		{"expired", time.Minute + time.Nanosecond, "auth", alicePassword, ErrStale},
		{"expired RFC 2069", time.Hour, "", alicePassword, ErrStale},
		{"expired and wrong password", 2 * time.Minute, "auth", "bad", ErrBadCredentials},
		{"slightly in the future", -time.Second, "auth", alicePassword, nil},
		{"far in the future", -2 * time.Minute, "auth", alicePassword, ErrStale},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nonce := freshNonce(t, v)
			clk.Add(tc.age)
			defer clk.Add(-tc.age)
			d := aliceReq(nonce)
			d.qop, d.pass = tc.qop, tc.pass
			_, err := v.Check("DESCRIBE", d.uri, d.header(), false)
			checkErr(t, err, tc.wantErr)
			if err != nil && UserOf(err) != "alice" {
				t.Fatalf("UserOf = %q", UserOf(err))
			}
		})
	}
}

func TestNonceCount(t *testing.T) {
	v := newVerifier(t, newClock())
	nonce := freshNonce(t, v)
	steps := []struct {
		nc      string
		wantErr error
	}{
		{"00000001", nil},
		{"00000001", ErrReplay},
		{"00000002", nil},
		{"00000003", nil},
		{"00000002", ErrReplay},
		{"0000000A", nil}, // skipping is fine; upper-case hex too
		{"0000000a", ErrReplay},
		{"ffffffff", nil},
		{"FFFFFFFF", ErrReplay},
	}
	for i, s := range steps {
		d := aliceReq(nonce)
		d.nc = s.nc
		_, err := v.Check("DESCRIBE", d.uri, d.header(), false)
		t.Run(fmt.Sprintf("%d_%s", i, s.nc), func(t *testing.T) { checkErr(t, err, s.wantErr) })
	}
	// A wrong response does not consume a count.
	nonce = freshNonce(t, v)
	d := aliceReq(nonce)
	d.pass = "bad"
	if _, err := v.Check("DESCRIBE", d.uri, d.header(), false); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("bad response: %v", err)
	}
	d = aliceReq(nonce)
	if _, err := v.Check("DESCRIBE", d.uri, d.header(), false); err != nil {
		t.Fatalf("nc 1 after a failed attempt: %v", err)
	}
	// The RFC 2069 form has no count: the same header is accepted again
	// while the nonce is fresh (documented).
	d = aliceReq(freshNonce(t, v))
	d.qop = ""
	for range 3 {
		if _, err := v.Check("DESCRIBE", d.uri, d.header(), false); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNonceCountTableBound(t *testing.T) {
	clk := newClock()
	v := &Verifier{Realm: testRealm, Users: testUsers(t), Now: clk.Now, maxCounts: 2}
	if err := v.Initialize(); err != nil {
		t.Fatal(err)
	}
	use := func(nonce, nc string) error {
		d := aliceReq(nonce)
		d.nc = nc
		_, err := v.Check("DESCRIBE", d.uri, d.header(), false)
		return err
	}
	var n [4]string
	for i := range n {
		n[i] = freshNonce(t, v)
		clk.Add(time.Second)
	}
	steps := []struct {
		nonce   int
		nc      string
		wantErr error
	}{
		{0, "00000001", nil},
		{1, "00000001", nil},
		{2, "00000001", nil},      // evicts n0
		{0, "00000001", ErrStale}, // a replay of n0 is not accepted...
		{0, "00000002", ErrStale}, // ...nor is n0 at all any more
		{1, "00000001", ErrReplay},
		{1, "00000002", nil},
		{3, "00000001", nil}, // evicts n1
		{1, "00000003", ErrStale},
		{2, "00000002", nil},
		{3, "00000002", nil},
	}
	for i, s := range steps {
		err := use(n[s.nonce], s.nc)
		t.Run(fmt.Sprintf("%d_n%d_%s", i, s.nonce, s.nc), func(t *testing.T) { checkErr(t, err, s.wantErr) })
		v.mu.Lock()
		size := len(v.counts)
		v.mu.Unlock()
		if size > 2 {
			t.Fatalf("nonce table holds %d entries, cap 2", size)
		}
	}
	// Entries expire with their nonce.
	clk.Add(defaultNonceTTL)
	if err := use(freshNonce(t, v), "00000001"); err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	size := len(v.counts)
	v.mu.Unlock()
	if size != 1 {
		t.Fatalf("after expiry the table holds %d entries, want 1", size)
	}
}

func TestBasic(t *testing.T) {
	v := newVerifier(t, newClock())
	tests := []struct {
		name     string
		header   string
		secure   bool
		wantUser string
		wantErr  error
		errUser  string
	}{
		{name: "bcrypt", header: basicHeader("alice", alicePassword), secure: true, wantUser: "alice"},
		{name: "htpasswd $2y$", header: basicHeader("mufasa", refPassword), secure: true, wantUser: "mufasa"},
		{name: "argon2id", header: basicHeader("bob", refPassword), secure: true, wantUser: "bob"},
		{name: "password with colons", header: basicHeader("carol", carolPassword), secure: true, wantUser: "carol"},
		{name: "lower-case scheme", header: "basic " + strings.TrimPrefix(basicHeader("alice", alicePassword), "Basic "), secure: true, wantUser: "alice"},
		{name: "no padding", header: strings.TrimRight(basicHeader("alice", alicePassword), "="), secure: true, wantUser: "alice"},
		{name: "insecure", header: basicHeader("alice", alicePassword), wantErr: ErrBasicInsecure, errUser: "alice"},
		{name: "insecure wrong password", header: basicHeader("alice", "x"), wantErr: ErrBasicInsecure, errUser: "alice"},
		{name: "wrong password", header: basicHeader("alice", "wonderland "), secure: true, wantErr: ErrBadCredentials, errUser: "alice"},
		{name: "argon2id wrong password", header: basicHeader("bob", "Circle of Life"), secure: true, wantErr: ErrBadCredentials, errUser: "bob"},
		{name: "unknown user", header: basicHeader("mallory", alicePassword), secure: true, wantErr: ErrBadCredentials, errUser: "mallory"},
		{name: "user case", header: basicHeader("Alice", alicePassword), secure: true, wantErr: ErrBadCredentials, errUser: "Alice"},
		{name: "no colon", header: "Basic " + base64.StdEncoding.EncodeToString([]byte("alice")), secure: true, wantErr: ErrMalformed},
		{name: "not base64", header: "Basic !!!", secure: true, wantErr: ErrMalformed},
		{name: "empty", header: "Basic", secure: true, wantErr: ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			user, err := v.Check("DESCRIBE", "rtsps://127.0.0.1:8322/door", tc.header, tc.secure)
			checkErr(t, err, tc.wantErr)
			if user != tc.wantUser {
				t.Fatalf("user = %q, want %q", user, tc.wantUser)
			}
			if UserOf(err) != tc.errUser {
				t.Fatalf("UserOf = %q, want %q", UserOf(err), tc.errUser)
			}
		})
	}
}

func TestBasicCache(t *testing.T) {
	clk := newClock()
	v := newVerifier(t, clk)
	cacheLen := func() int {
		v.mu.Lock()
		defer v.mu.Unlock()
		return len(v.basic)
	}
	check := func(pass string) error {
		_, err := v.Check("DESCRIBE", "/door", basicHeader("alice", pass), true)
		return err
	}
	if err := check(alicePassword); err != nil {
		t.Fatal(err)
	}
	if n := cacheLen(); n != 1 {
		t.Fatalf("cache holds %d entries after a success, want 1", n)
	}
	if err := check(alicePassword); err != nil {
		t.Fatal(err)
	}
	if err := check("wrong"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong password with a cached entry: %v", err)
	}
	if n := cacheLen(); n != 1 {
		t.Fatalf("a failure was cached: %d entries", n)
	}
	// Another user's cached password does not open this one.
	if _, err := v.Check("DESCRIBE", "/door", basicHeader("mufasa", alicePassword), true); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("mufasa with alice's password: %v", err)
	}
	clk.Add(basicCacheTTL)
	if v.cachedBasic("alice", alicePassword) {
		t.Fatal("entry still valid after its TTL")
	}
	if err := check(alicePassword); err != nil {
		t.Fatal(err)
	}

	// Bounded.
	for i := range maxBasicCache + 100 {
		v.cacheBasic(fmt.Sprintf("u%d", i), "p")
	}
	if n := cacheLen(); n > maxBasicCache {
		t.Fatalf("cache holds %d entries, cap %d", n, maxBasicCache)
	}
	if !v.cachedBasic(fmt.Sprintf("u%d", maxBasicCache+99), "p") {
		t.Fatal("the newest entry was evicted")
	}
}

func TestHashPassword(t *testing.T) {
	t.Parallel() // bcrypt cost 12 takes seconds under the race detector
	const pass = "correct horse battery staple"
	u, err := HashPassword("dave", testRealm, pass)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateUser(u); err != nil {
		t.Fatal(err)
	}
	if want := md5h("dave:" + testRealm + ":" + pass); u.HA1 != want {
		t.Fatalf("HA1 = %s, want %s", u.HA1, want)
	}
	if !strings.HasPrefix(u.Hash, "$2a$12$") {
		t.Fatalf("hash %q is not bcrypt cost 12", u.Hash)
	}

	// The Basic check below runs CheckPassword on the hash; wrong passwords
	// are covered by TestCheckPassword and TestBasic (each cost-12 run is
	// slow under the race detector).
	v := &Verifier{Realm: testRealm, Users: []User{u}}
	if err := v.Initialize(); err != nil {
		t.Fatal(err)
	}
	d := digestReq{user: "dave", realm: testRealm, pass: pass, method: "SETUP",
		uri: "rtsp://h/door/trackID=0", nonce: freshNonce(t, v), qop: "auth", nc: "00000001", cnonce: "c"}
	if user, err := v.Check("SETUP", d.uri, d.header(), false); err != nil || user != "dave" {
		t.Fatalf("Digest: %q, %v", user, err)
	}
	if user, err := v.Check("SETUP", d.uri, basicHeader("dave", pass), true); err != nil || user != "dave" {
		t.Fatalf("Basic: %q, %v", user, err)
	}

	bad := []struct {
		name, user, realm, pass, wantPrefix string
	}{
		{"colon in name", "a:b", testRealm, "p", "name:"},
		{"empty name", "", testRealm, "p", "name:"},
		{"quote in realm", "a", `x"y`, "p", "realm:"},
		{"empty realm", "a", "", "p", "realm:"},
		{"empty password", "a", testRealm, "", "password:"},
		{"73-byte password", "a", testRealm, strings.Repeat("x", 73), "password:"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := HashPassword(tc.user, tc.realm, tc.pass)
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantPrefix) {
				t.Fatalf("error = %v, want prefix %q", err, tc.wantPrefix)
			}
		})
	}
}

func TestValidateUser(t *testing.T) {
	ha1 := md5h("alice:" + testRealm + ":x")
	bc := testUsers(t)[0].Hash
	tests := []struct {
		name       string
		u          User
		wantPrefix string // "" means valid
	}{
		{"bcrypt $2a$", User{"alice", ha1, bc}, ""},
		{"bcrypt $2b$", User{"alice", ha1, "$2b$" + bc[4:]}, ""},
		{"bcrypt $2y$", User{"alice", ha1, bcryptRef2y}, ""},
		{"argon2id", User{"alice", ha1, argonRef64MiB}, ""},
		{"64-character name", User{strings.Repeat("é", 64), ha1, bc}, ""},
		{"name with space and dot", User{"door cam.1", ha1, bc}, ""},
		{"empty name", User{"", ha1, bc}, "name:"},
		{"65-character name", User{strings.Repeat("é", 65), ha1, bc}, "name:"},
		{"colon", User{"a:b", ha1, bc}, "name:"},
		{"quote", User{`a"b`, ha1, bc}, "name:"},
		{"backslash", User{`a\b`, ha1, bc}, "name:"},
		{"control", User{"a\x01b", ha1, bc}, "name:"},
		{"DEL", User{"a\x7fb", ha1, bc}, "name:"},
		{"invalid UTF-8", User{"a\xffb", ha1, bc}, "name:"},
		{"upper-case HA1", User{"alice", strings.ToUpper(ha1), bc}, "ha1: must be 32"},
		{"short HA1", User{"alice", ha1[:31], bc}, "ha1:"},
		{"non-hex HA1", User{"alice", "g" + ha1[1:], bc}, "ha1:"},
		{"empty hash", User{"alice", ha1, ""}, "hash:"},
		{"md5-crypt", User{"alice", ha1, "$1$saltsalt$2vLsW0dKZ6Sd5mLGEAd6d/"}, "hash: unsupported format"},
		{"$2x$", User{"alice", ha1, "$2x$" + bc[4:]}, "hash: unsupported format"},
		{"argon2i", User{"alice", ha1, strings.Replace(argonRef1MiB, "argon2id", "argon2i", 1)}, "hash: unsupported format"},
		{"plain text", User{"alice", ha1, "wonderland"}, "hash: unsupported format"},
		{"bcrypt truncated", User{"alice", ha1, bc[:59]}, "hash:"},
		{"bcrypt trailing junk", User{"alice", ha1, bc + "x"}, "hash:"},
		{"bcrypt cost 31", User{"alice", ha1, "$2a$31$" + bc[7:]}, "hash: bcrypt cost 31"},
		{"bcrypt cost 17", User{"alice", ha1, "$2a$17$" + bc[7:]}, "hash: bcrypt cost 17"},
		{"bcrypt bad cost", User{"alice", ha1, "$2a$x4$" + bc[7:]}, "hash:"},
		{"argon2 v=16", User{"alice", ha1, strings.Replace(argonRef1MiB, "v=19", "v=16", 1)}, "hash:"},
		{"argon2 no version", User{"alice", ha1, "$argon2id$m=1024,t=2,p=1$c29tZXNhbHR2YWx1ZQ$DCXma6LJY8Aa8AE4tNXM7eNZaGmbGwDNOpbs0MmDdBs"}, "hash:"},
		{"argon2 params reordered", User{"alice", ha1, strings.Replace(argonRef1MiB, "m=1024,t=2,p=1", "t=2,m=1024,p=1", 1)}, "hash:"},
		{"argon2 signed param", User{"alice", ha1, strings.Replace(argonRef1MiB, "m=1024", "m=+1024", 1)}, "hash:"},
		{"argon2 huge memory", User{"alice", ha1, strings.Replace(argonRef1MiB, "m=1024", "m=1048576", 1)}, "hash: argon2id memory"},
		{"argon2 memory below 8p", User{"alice", ha1, strings.Replace(argonRef1MiB, "m=1024,t=2,p=1", "m=8,t=2,p=2", 1)}, "hash: argon2id memory"},
		{"argon2 t=0", User{"alice", ha1, strings.Replace(argonRef1MiB, "t=2", "t=0", 1)}, "hash: argon2id passes"},
		{"argon2 p=0", User{"alice", ha1, strings.Replace(argonRef1MiB, "p=1", "p=0", 1)}, "hash: argon2id lanes"},
		{"argon2 p=255", User{"alice", ha1, strings.Replace(argonRef1MiB, "p=1", "p=255", 1)}, "hash: argon2id lanes"},
		{"argon2 overflow", User{"alice", ha1, strings.Replace(argonRef1MiB, "m=1024", "m=99999999999", 1)}, "hash:"},
		{"argon2 padded salt", User{"alice", ha1, strings.Replace(argonRef1MiB, "c29tZXNhbHR2YWx1ZQ", "c29tZXNhbHR2YWx1ZQ==", 1)}, "hash: argon2id salt"},
		{"argon2 short salt", User{"alice", ha1, strings.Replace(argonRef1MiB, "c29tZXNhbHR2YWx1ZQ", "c2FsdA", 1)}, "hash: argon2id salt"},
		{"argon2 short key", User{"alice", ha1, "$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHR2YWx1ZQ$DCXma6LJY8Aa8AE4"}, "hash: argon2id key"},
		{"argon2 extra field", User{"alice", ha1, argonRef1MiB + "$x"}, "hash:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateUser(tc.u)
			if tc.wantPrefix == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantPrefix) {
				t.Fatalf("error = %v, want prefix %q", err, tc.wantPrefix)
			}
		})
	}
}

func TestCheckPassword(t *testing.T) {
	t.Parallel() // argon2id with 64 MiB
	long, err := bcrypt.GenerateFromPassword([]byte(strings.Repeat("a", 72)), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, hash, pass string
		want             bool
	}{
		{"argon2id 1 MiB", argonRef1MiB, refPassword, true},
		{"argon2id 1 MiB wrong", argonRef1MiB, "circle of life", false},
		{"argon2id 64 MiB", argonRef64MiB, refPassword, true},
		{"argon2id 64 MiB wrong", argonRef64MiB, refPassword + " ", false},
		{"bcrypt $2y$", bcryptRef2y, refPassword, true},
		{"bcrypt $2y$ wrong", bcryptRef2y, "", false},
		{"bcrypt colons", bcryptColons, carolPassword, true},
		{"bcrypt 72 bytes", string(long), strings.Repeat("a", 72), true},
		// bcrypt itself would accept this; a password past 72 bytes is
		// not the one that was hashed.
		{"bcrypt 73 bytes", string(long), strings.Repeat("a", 73), false},
		{"malformed", "$argon2id$garbage", "x", false},
		{"empty", "", "", false},
		{"oversized bcrypt cost", "$2a$31$" + string(long)[7:], strings.Repeat("a", 72), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := CheckPassword(User{Name: "x", Hash: tc.hash}, tc.pass); got != tc.want {
				t.Fatalf("CheckPassword = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestInitialize(t *testing.T) {
	users := testUsers(t)
	tests := []struct {
		name    string
		v       *Verifier
		wantErr string // "" means success
	}{
		{"minimal", &Verifier{Realm: testRealm}, ""},
		{"with users and key", &Verifier{Realm: testRealm, Users: users, Key: make([]byte, 16)}, ""},
		{"no realm", &Verifier{}, "auth: realm:"},
		{"quote in realm", &Verifier{Realm: `a"b`}, "auth: realm:"},
		{"newline in realm", &Verifier{Realm: "a\nb"}, "auth: realm:"},
		{"negative TTL", &Verifier{Realm: testRealm, NonceTTL: -time.Second}, "auth: nonce TTL"},
		{"short key", &Verifier{Realm: testRealm, Key: make([]byte, 15)}, "auth: nonce key"},
		{"invalid user", &Verifier{Realm: testRealm, Users: []User{{Name: "x", HA1: "nope", Hash: users[0].Hash}}}, `auth: users[0] "x": ha1:`},
		{"duplicate user", &Verifier{Realm: testRealm, Users: []User{users[0], users[1], users[0]}}, `auth: users[2] "alice": name: duplicate`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.v.Initialize()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want prefix %q", err, tc.wantErr)
			}
		})
	}

	t.Run("used before Initialize", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic")
			}
		}()
		var v Verifier
		_, _ = v.Check("DESCRIBE", "/", "Digest x=y", false)
	})

	t.Run("fields are copied", func(t *testing.T) {
		v := &Verifier{Realm: testRealm, Users: users}
		if err := v.Initialize(); err != nil {
			t.Fatal(err)
		}
		v.Realm, v.Users = "changed", nil
		d := aliceReq(freshNonce(t, v))
		if _, err := v.Check("DESCRIBE", d.uri, d.header(), false); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("shared key", func(t *testing.T) {
		key := []byte("0123456789abcdef0123456789abcdef")
		a := &Verifier{Realm: testRealm, Users: users, Key: key}
		b := &Verifier{Realm: testRealm, Users: users, Key: key}
		if err := a.Initialize(); err != nil {
			t.Fatal(err)
		}
		if err := b.Initialize(); err != nil {
			t.Fatal(err)
		}
		d := aliceReq(freshNonce(t, a))
		if _, err := b.Check("DESCRIBE", d.uri, d.header(), false); err != nil {
			t.Fatalf("a nonce signed with the same key: %v", err)
		}
	})
}

// TestGortsplibSender feeds our challenge to gortsplib's client-side
// Sender, an implementation we did not write, and checks the header it
// produces.
func TestGortsplibSender(t *testing.T) {
	v := newVerifier(t, nil)
	tests := []struct {
		name          string
		secure, stale bool
		pass          string
		wantErr       error
	}{
		{"plain", false, false, alicePassword, nil},
		{"TLS challenge with Basic offered too", true, false, alicePassword, nil},
		{"stale challenge", false, true, alicePassword, nil},
		{"wrong password", false, false, "wonderland?", ErrBadCredentials},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &gsauth.Sender{
				WWWAuth: base.HeaderValue(v.Challenge(tc.secure, tc.stale)),
				User:    "alice",
				Pass:    tc.pass,
			}
			if err := s.Initialize(); err != nil {
				t.Fatalf("gortsplib does not accept our challenge %q: %v", s.WWWAuth, err)
			}
			for _, rawURL := range []string{"rtsp://127.0.0.1:8554/door", "rtsp://127.0.0.1:8554/door/trackID=0"} {
				u, err := base.ParseURL(rawURL)
				if err != nil {
					t.Fatal(err)
				}
				req := &base.Request{Method: base.Describe, URL: u}
				s.AddAuthorization(req)
				h := req.Header["Authorization"]
				if len(h) != 1 || !strings.HasPrefix(h[0], "Digest ") {
					t.Fatalf("gortsplib sent %q, want one Digest header", h)
				}
				t.Logf("gortsplib sent: %s", h[0])
				user, err := v.Check(string(req.Method), req.URL.String(), h[0], tc.secure)
				checkErr(t, err, tc.wantErr)
				if tc.wantErr == nil && user != "alice" {
					t.Fatalf("user = %q", user)
				}
			}
		})
	}
}

func TestNoPasswordInErrors(t *testing.T) {
	const secret = "Zebra-Secret-9431"
	v := newVerifier(t, nil)
	nonce := freshNonce(t, v)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name, header string
		secure       bool
	}{
		{"Basic plain", basicHeader("alice", secret), false},
		{"Basic wrong password", basicHeader("alice", secret), true},
		{"Basic unknown user", basicHeader("nobody", secret), true},
		{"Basic no colon", "Basic " + b64(secret), true},
		{"Basic no colon plain", "Basic " + b64(secret), false},
		{"Basic raw", "Basic " + secret, true},
		{"scheme only", secret, false},
		{"Digest bare word", "Digest " + secret, false},
		{"Digest secret as name twice", "Digest " + secret + "=1, " + secret + "=2", false},
		{"Digest secret as unterminated name", "Digest " + secret + `="x`, false},
		{"Digest secret as response", aliceReq(nonce).header() + `, response="` + secret + `"`, false},
		{"Digest secret as algorithm", aliceReq(freshNonce(t, v)).header() + ", algorithm=" + secret, false},
		{"Digest secret as qop", strings.Replace(aliceReq(freshNonce(t, v)).header(), "qop=auth", "qop="+secret, 1), false},
		{"Digest secret as nc", strings.Replace(aliceReq(freshNonce(t, v)).header(), "nc=00000001", "nc="+secret, 1), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Check("DESCRIBE", "/door", tc.header, tc.secure)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, s := range []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprint(errors.Unwrap(err))} {
				if strings.Contains(s, secret) || strings.Contains(s, b64(secret)) {
					t.Fatalf("error text contains the password: %q", s)
				}
			}
			if strings.Contains(UserOf(err), secret) {
				t.Fatalf("UserOf contains the password: %q", UserOf(err))
			}
		})
	}
}

func TestSameResource(t *testing.T) {
	tests := []struct {
		param, req string
		want       bool
	}{
		{"rtsp://h:8554/door", "rtsp://h:8554/door", true},
		{"/door", "rtsp://h:8554/door", true},
		{"rtsp://h:8554/door", "/door", true},
		{"rtsp://other/door", "rtsp://h:8554/door", true},
		{"rtsp://h/door/", "rtsp://h/door", true},
		{"rtsp://h/door", "/door/", true},
		{"rtsp://h", "rtsp://h/", true},
		{"*", "*", true},
		{"rtsp://h/door//", "rtsp://h/door", false},
		{"rtsp://h/door", "rtsp://h/door/trackID=0", false},
		{"rtsp://h/doors", "rtsp://h/door", false},
		{"door", "rtsp://h/door", false},
		{"//h/door", "/door", false},
		{"rtsp:/door", "/door", false},
		{"mailto:door", "/door", false},
		{"/door?a=1", "/door?a=1", true},
		{"/door?a=1", "rtsp://h/door?a=1", true},
		{"/door?a=1", "/door?a=2", false},
		{"/door", "/door?a=1", false},
		{"/%64oor", "/door", true},
		{"/door%zz", "/door", false},
		{"", "/door", false},
	}
	for _, tc := range tests {
		if got := sameResource(tc.param, tc.req); got != tc.want {
			t.Errorf("sameResource(%q, %q) = %v, want %v", tc.param, tc.req, got, tc.want)
		}
	}
}

func TestParseParams(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr bool
	}{
		{``, map[string]string{}, false},
		{`a=1`, map[string]string{"a": "1"}, false},
		{`A="x y", b = 2 ,, c=""`, map[string]string{"a": "x y", "b": "2", "c": ""}, false},
		{`a="x,y", b="q\"r\\s"`, map[string]string{"a": "x,y", "b": `q"r\s`}, false},
		{"a=1,\tb=2", map[string]string{"a": "1", "b": "2"}, false},
		{`uri=rtsp://h:1/x`, map[string]string{"uri": "rtsp://h:1/x"}, false},
		{`a`, nil, true},
		{`a=1 b=2`, nil, true},
		{`a="x`, nil, true},
		{`a="x\`, nil, true},
		{`a=1, a=2`, nil, true},
		{`a=1, A=2`, nil, true},
		{`=1`, nil, true},
		{`a="x"y`, nil, true},
		{`a=x"y"`, nil, true},
		{strings.Repeat("a=1,", maxHeaderLen), nil, true},
	}
	for _, tc := range tests {
		got, err := parseParams(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseParams(%.40q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("parseParams(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	var many []string
	for i := range maxParams + 1 {
		many = append(many, fmt.Sprintf("p%d=1", i))
	}
	if _, err := parseParams(strings.Join(many, ",")); err == nil {
		t.Errorf("%d parameters accepted", maxParams+1)
	}
}

func TestConcurrent(t *testing.T) {
	v := newVerifier(t, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				d := aliceReq(freshNonce(t, v))
				for _, nc := range []string{"00000001", "00000002"} {
					d.nc = nc
					if _, err := v.Check("DESCRIBE", d.uri, d.header(), false); err != nil {
						t.Errorf("goroutine %d iteration %d: %v", g, i, err)
						return
					}
				}
				if _, err := v.Check("DESCRIBE", d.uri, d.header(), false); !errors.Is(err, ErrReplay) {
					t.Errorf("replay: %v", err)
					return
				}
				if i%10 == 0 {
					if _, err := v.Check("DESCRIBE", d.uri, basicHeader("alice", alicePassword), true); err != nil {
						t.Errorf("Basic: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}
