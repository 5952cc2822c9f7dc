package token

import (
	"testing"
	"time"
)

// FuzzRedeem presents arbitrary tokens for a live session: only the issued
// token, once, is accepted.
func FuzzRedeem(f *testing.F) {
	for _, seed := range []string{"", "x", "Bearer x", "\x00", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		f.Add(seed, false)
	}
	f.Add("", true)
	f.Fuzz(func(t *testing.T, presented string, useIssued bool) {
		var s Store
		tok, err := s.Issue("sess", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if useIssued {
			presented = tok
		}
		err = s.Redeem("sess", presented)
		if (err == nil) != (presented == tok) {
			t.Fatalf("Redeem(%q) = %v with token %q", presented, err, tok)
		}
		if err == nil && s.Redeem("sess", presented) == nil {
			t.Fatal("the token was accepted twice")
		}
	})
}
