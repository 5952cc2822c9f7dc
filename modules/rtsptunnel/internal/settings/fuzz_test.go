package settings

import (
	"testing"
)

// FuzzEnv sets one setting's environment variable to an arbitrary value:
// FromEnv never panics, and what it accepts validates.
func FuzzEnv(f *testing.F) {
	for i, seed := range []string{
		"554=10.0.0.1:554", `{"554":"cam:554","x":"y"}`, "1m30s", "-1", "9223372036854775807", "1e309",
		"[1,2,3]", "a,b,,c", "*.example.com", "true", "", " ", "\x00", "554=:0,555", ":9600", "[::1]:0",
	} {
		f.Add(uint8(i), seed)
	}
	f.Fuzz(func(t *testing.T, which uint8, value string) {
		fl := fields[int(which)%len(fields)]
		s, err := FromEnv(func(k string) (string, bool) {
			if k == fl.env {
				return value, true
			}
			return "", false
		})
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("%s=%q accepted but invalid: %v", fl.env, value, err)
		}
	})
}
