package hub

import (
	"strings"
	"testing"
)

// FuzzParseUsername feeds arbitrary MQTT usernames, the first thing an
// unauthenticated client sends: nothing panics, and a parsed identity has a
// hub and a device.
func FuzzParseUsername(f *testing.F) {
	for _, seed := range []string{
		"h/d/m/?api-version=2021-04-12&model-id=dtmi%3Aa%3Bb%3B1", "h/d/api-version=2020-09-30", "h/d", "h", "",
		"h//m/?", "h/d/m/x/y/?a=b", "h/d/?%zz=%", "/////", "h/d/m/?api-version=" + strings.Repeat("x", 1000),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseUsername(s)
		if err == nil && (u.hub == "" || u.device == "") {
			t.Fatalf("parsed %q into %+v", s, u)
		}
	})
}
