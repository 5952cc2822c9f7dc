package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestMD5Crypt(t *testing.T) {
	// Vectors from `openssl passwd -1 -salt <salt> <password>`.
	for _, tc := range []struct{ password, salt, want string }{
		{"password", "saltsalt", "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"},
		{"correct horse battery staple", "ab", "$1$ab$BGweqrca.3UvnWSg8yFZd1"},
	} {
		if got := MD5Crypt(tc.password, tc.salt); got != tc.want {
			t.Errorf("MD5Crypt(%q, %q) = %q, want %q", tc.password, tc.salt, got, tc.want)
		}
	}
}

// TestHtpasswdSquid checks the password file with squid's own helper, the
// program that reads it in the proxy tests.
func TestHtpasswdSquid(t *testing.T) {
	_, ncsa, err := SquidPath()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	pw, err := htpasswd(map[string]string{"alice": "s3cret pass", "bob": "other"})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(file, []byte(pw), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ncsa, file)
	// The helper reads "user password" lines (URL-escaped) and answers
	// OK or ERR for each.
	cmd.Stdin = strings.NewReader("alice s3cret%20pass\nalice wrong\nbob other\nmallory x\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("basic_ncsa_auth: %v", err)
	}
	var verdicts []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		verdicts = append(verdicts, strings.Fields(l)[0])
	}
	if got := strings.Join(verdicts, " "); got != "OK ERR OK ERR" {
		t.Errorf("basic_ncsa_auth verdicts %q, want OK ERR OK ERR\n%s", got, out)
	}
}
