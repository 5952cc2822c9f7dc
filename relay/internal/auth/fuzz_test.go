package auth

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzCheck feeds arbitrary requests to a Verifier: it must never panic,
// must refuse with exactly one of the sentinel errors, must never put the
// Basic password in an error message, and may accept only a configured user.
// The seeds include valid Digest and Basic headers (made with a fixed key,
// clock and nonce) so that mutations explore past the first checks.
func FuzzCheck(f *testing.F) {
	const password = "fuzz-basic-password"
	key := []byte("fuzz-key-fuzz-key-fuzz-key-32byt")
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	users := testUsers(f)

	newV := func() *Verifier {
		v := &Verifier{Realm: testRealm, Users: users, Key: key, Now: func() time.Time { return now }}
		if err := v.Initialize(); err != nil {
			f.Fatal(err)
		}
		return v
	}
	var raw [nonceLen]byte
	binary.BigEndian.PutUint64(raw[:], uint64(now.Add(-time.Second).UnixNano()))
	for i := nonceTSLen; i < nonceTSLen+nonceRandLen; i++ {
		raw[i] = byte(i)
	}
	nonce := newV().sealNonce(raw)

	d := aliceReq(nonce)
	rfc2069 := d
	rfc2069.qop = ""
	seeds := []struct {
		method, uri, authz string
		secure             bool
	}{
		{"DESCRIBE", d.uri, d.header(), false},
		{"DESCRIBE", "/door", rfc2069.header(), false},
		{"DESCRIBE", d.uri, basicHeader("alice", alicePassword), true},
		{"DESCRIBE", d.uri, basicHeader("alice", password), true},
		{"DESCRIBE", d.uri, basicHeader("alice", password), false},
		{"OPTIONS", "*", "", false},
		{"DESCRIBE", d.uri, "Digest", false},
		{"DESCRIBE", d.uri, `Digest username="a\"b", realm="x,y", nonce=, uri="\\", response="`, false},
		{"DESCRIBE", d.uri, `Digest ,,, = , a==b, "c"`, false},
		{"DESCRIBE", d.uri, "Basic ====", true},
		{"PLAY", "rtsp://[::1]:8554/door?x=%zz", "Digest uri=rtsp://[::1", false},
	}
	for i, s := range seeds {
		// The first three are valid: make sure they stay so.
		if _, err := newV().Check(s.method, s.uri, s.authz, s.secure); (err == nil) != (i < 3) {
			f.Fatalf("seed %d: %v", i, err)
		}
		f.Add(s.method, s.uri, s.authz, s.secure)
	}

	f.Fuzz(func(t *testing.T, method, uri, authz string, secure bool) {
		v := newV()
		user, err := v.Check(method, uri, authz, secure)
		if err == nil {
			if _, ok := v.users[user]; !ok {
				t.Fatalf("accepted unknown user %q", user)
			}
			return
		}
		if user != "" {
			t.Fatalf("refused (%v) but returned user %q", err, user)
		}
		n := 0
		for _, s := range sentinels {
			if errors.Is(err, s) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("error %v wraps %d sentinels, want 1", err, n)
		}
		if strings.Contains(err.Error(), password) {
			t.Fatalf("error contains the password: %v", err)
		}
	})
}
