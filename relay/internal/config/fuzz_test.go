package config

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecode feeds arbitrary config files to Decode and Validate (the relay's
// start-up path): nothing panics, and no error quotes the service key.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{}`, `[]`, `null`, `{"cameras":[{}]}`, `{"cameras":null}`, `{"iotHub":{"connectionString":"HostName=h;SharedAccessKeyName=s;SharedAccessKey=SECRETKEY"}}`,
		`{"iotHub":{"connectionString":"HostName=h;SharedAccessKeyName=s;SharedAccessKey=SECRET not base64"}}`,
		`{"methodResponseTimeout":"1h","tokenTTL":-1,"maxSessionsPerCamera":-5}`,
		`{"cameras":[{"name":"a","deviceId":"d","localPort":554,"listen":"127.0.0.1:0"},{"name":"a"}]}`,
		`{"publicURL":"wss://u:p@h/x?q#f","selfSigned":true,"insecureWS":true}`,
		`{"cameras":[{"name":"x","localPort":1e400}]}`, `{"logLevel":{"a":1}}`, `{"cameras":{"0":1}}`,
	} {
		f.Add([]byte(seed))
	}
	check := func(data []byte) error {
		cfg := Default()
		err := Decode(data, cfg)
		if err == nil {
			err = cfg.Validate()
		}
		return err
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := check(data)
		if err == nil {
			return
		}
		if i := strings.Index(string(data), "SharedAccessKey="); i >= 0 {
			key := string(data[i+len("SharedAccessKey="):])
			key, _, _ = strings.Cut(key, ";")
			key, _, _ = strings.Cut(key, `"`)
			if len(key) < 6 || !strings.Contains(err.Error(), key) {
				return
			}
			// The key may be a word the message says anyway ("not valid
			// base64"): it leaks only if the mention goes when the key is
			// another string.
			other := strings.Replace(string(data), "SharedAccessKey="+key, "SharedAccessKey="+strings.Repeat("Q", len(key)), 1)
			if oerr := check([]byte(other)); oerr == nil || !strings.Contains(oerr.Error(), key) {
				t.Fatalf("error %q quotes the key %q", err, key)
			}
		}
	})
}

// FuzzParseCamera feeds arbitrary --camera specs: nothing panics, and a
// parsed camera's fields hold only what the spec said.
func FuzzParseCamera(f *testing.F) {
	for _, seed := range []string{
		"name=cam1,deviceId=edge1,moduleId=rtsptunnel,localPort=554,listen=127.0.0.1:8554",
		"name=a,localPort=x", "=,=,", "name=a,name=b", "localPort=99999999999999999999", "rtspPath=a=b,c",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		cam, err := ParseCamera(spec)
		if err != nil {
			return
		}
		// JSON replaces invalid UTF-8 on the way; compare only valid specs.
		if utf8.ValidString(spec) && cam.Name != "" && !strings.Contains(spec, cam.Name) {
			t.Fatalf("name %q not in the spec %q", cam.Name, spec)
		}
	})
}
