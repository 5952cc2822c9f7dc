package iothub

import (
	"strings"
	"testing"
)

// FuzzParseConnectionString feeds arbitrary service connection strings:
// nothing panics, a parsed one has its three parts, and no error quotes the
// key.
func FuzzParseConnectionString(f *testing.F) {
	for _, seed := range []string{
		"HostName=h.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=U0VDUkVUS0VZ",
		"HostName=h;SharedAccessKeyName=s;SharedAccessKey=SECRET not base64",
		"HostName=h;DeviceId=d;SharedAccessKey=SECRETKEY", ";;=;", "SharedAccessKey=SECRETKEY", "HostName",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cs, err := ParseConnectionString(s)
		if err == nil {
			if cs.HostName == "" || cs.KeyName == "" || len(cs.Key) == 0 {
				t.Fatalf("parsed %+v from %q", cs, s)
			}
			return
		}
		for _, part := range strings.Split(s, ";") {
			k, v, _ := strings.Cut(part, "=")
			if v = strings.TrimSpace(v); strings.EqualFold(strings.TrimSpace(k), "SharedAccessKey") && len(v) >= 4 && strings.Contains(err.Error(), v) &&
				// A key that is a piece of a word the message says anyway
				// ("SharedAccessKey is not valid base64") is not a leak:
				// the mention must go when the key is another string.
				quotesKey(s, v) {
				t.Fatalf("error %q quotes the key", err)
			}
		}
	})
}

// quotesKey reports whether the error for s still mentions key once every
// SharedAccessKey value in s is replaced by another string: if not, the
// mention came from the key.
func quotesKey(s, key string) bool {
	parts := strings.Split(s, ";")
	for i, part := range parts {
		k, _, ok := strings.Cut(part, "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "SharedAccessKey") {
			parts[i] = k + "=" + strings.Repeat("Q", len(key))
		}
	}
	_, err := ParseConnectionString(strings.Join(parts, ";"))
	return err == nil || !strings.Contains(err.Error(), key)
}
