package harness

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/rand"
	"fmt"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Squid is a real squid (Debian's package) run by a test with a
// configuration of its own: memory only (no cache folder), its logs, pid
// file and password file in Dir, and CONNECT the only thing it allows. It
// works for root and non-root users alike: under root, squid drops to
// cache_effective_user ("proxy", Debian's squid user, or "nobody"), so Dir
// is handed to that user.
type Squid struct {
	// Dir holds squid.conf, the logs, the pid file, passwd and hosts.
	// Required; it is made when missing.
	Dir string
	// Listen is the address squid listens on, e.g. "10.200.0.1:3128".
	Listen string
	// Users maps user names to passwords: when any is set, every request
	// needs Basic proxy authentication checked by squid's basic_ncsa_auth
	// against an htpasswd file (MD5-crypt entries) written here.
	Users map[string]string
	// ConnectPorts are the only ports CONNECT may reach, like stock squid's
	// SSL_ports ACL (which has 443 only): CONNECT to any other port is
	// refused with 403 before authentication, as in squid's default
	// configuration.
	ConnectPorts []int
	// PortUsers limits CONNECT to a port to some of Users: anyone else gets
	// 407 Proxy Authentication Required, squid's answer when the ACL that
	// denies is an authentication one (as for wrong credentials).
	PortUsers map[int][]string
	// Hosts are squid's own host name to IP mapping (its hosts_file), so
	// that names reach test addresses without any DNS; squid asks no DNS
	// server (its only name server is an unused loopback port).
	Hosts map[string]string
	// NetNS runs squid inside that namespace when set.
	NetNS *NetNS

	proc *Process
}

// SquidPath returns the path of the squid binary and of its basic_ncsa_auth
// helper, or an error saying how to install them.
func SquidPath() (squid, ncsa string, err error) {
	squid, err = LookSbin("squid")
	if err != nil {
		return "", "", fmt.Errorf("squid is not installed (apt-get install squid, or scripts/setup.sh): %w", err)
	}
	for _, p := range []string{"/usr/lib/squid/basic_ncsa_auth", "/usr/lib64/squid/basic_ncsa_auth", "/usr/libexec/squid/basic_ncsa_auth"} {
		if _, err := os.Stat(p); err == nil {
			return squid, p, nil
		}
	}
	return "", "", fmt.Errorf("squid's basic_ncsa_auth helper not found next to %s", squid)
}

// Start writes the configuration and starts squid, and returns once squid
// says it accepts connections. Stop ends it.
func (s *Squid) Start(ctx context.Context) error {
	bin, ncsa, err := SquidPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("failed to make squid's folder: %w", err)
	}
	conf := s.config(ncsa)
	files := map[string]string{"squid.conf": conf, "hosts": s.hostsFile()}
	if len(s.Users) > 0 {
		pw, err := htpasswd(s.Users)
		if err != nil {
			return err
		}
		files["passwd"] = pw
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(s.Dir, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("failed to write squid's %s: %w", name, err)
		}
	}
	if err := s.handOver(); err != nil {
		return err
	}
	// -N: stay in the foreground, no daemon; -d 1: important messages on
	// stderr as well as in cache.log.
	prog, args := bin, []string{"-N", "-d", "1", "-f", filepath.Join(s.Dir, "squid.conf")}
	if s.NetNS != nil {
		prog, args = s.NetNS.Command(bin, args...)
	}
	p, err := Start(ctx, "squid", prog, args, nil)
	if err != nil {
		return err
	}
	s.proc = p
	if _, err := p.WaitContains(ctx, "Accepting HTTP Socket connections"); err != nil {
		s.Stop()
		return fmt.Errorf("squid did not start: %w\n%s", err, p.Output())
	}
	return nil
}

// Stop ends squid (it closes every tunnel at once: shutdown_lifetime is 0).
func (s *Squid) Stop() {
	if s.proc != nil {
		s.proc.Stop(10 * time.Second)
	}
}

// Output is what squid printed.
func (s *Squid) Output() string {
	if s.proc == nil {
		return ""
	}
	return s.proc.Output()
}

func (s *Squid) config(ncsa string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# written by the rtsptunnel end-to-end tests")
	w("http_port %s", s.Listen)
	w("visible_hostname rtsptunnel-test-proxy")
	if os.Geteuid() == 0 {
		w("cache_effective_user %s", squidUser())
	}
	w("pid_filename %s", filepath.Join(s.Dir, "squid.pid"))
	w("access_log stdio:%s", filepath.Join(s.Dir, "access.log"))
	w("cache_log %s", filepath.Join(s.Dir, "cache.log"))
	w("cache_store_log none")
	w("coredump_dir %s", s.Dir)
	w("netdb_filename none")
	w("pinger_enable off") // no ICMP helper: nothing but the CONNECTs leaves squid
	w("cache deny all")
	w("shutdown_lifetime 0 seconds")
	w("hosts_file %s", filepath.Join(s.Dir, "hosts"))
	// Nothing listens there: a name missing from Hosts fails at once, and
	// no query ever leaves the test's namespaces.
	w("dns_nameservers 127.0.0.1")
	w("dns_timeout 2 seconds")
	ports := make([]string, 0, len(s.ConnectPorts))
	for _, p := range s.ConnectPorts {
		ports = append(ports, strconv.Itoa(p))
	}
	if len(ports) == 0 {
		ports = []string{"443"}
	}
	w("acl SSL_ports port %s", strings.Join(ports, " "))
	w("acl CONNECT method CONNECT")
	w("http_access deny !CONNECT")
	w("http_access deny CONNECT !SSL_ports")
	if len(s.Users) > 0 {
		w("auth_param basic program %s %s", ncsa, filepath.Join(s.Dir, "passwd"))
		w("auth_param basic realm rtsptunnel-test-proxy")
		w("auth_param basic children 2")
		w("acl authed proxy_auth REQUIRED")
		for _, port := range slices.Sorted(maps.Keys(s.PortUsers)) {
			w("acl port_%d port %d", port, port)
			w("acl users_%d proxy_auth %s", port, strings.Join(s.PortUsers[port], " "))
			w("http_access deny CONNECT port_%d !users_%d", port, port)
		}
		w("http_access allow authed")
		w("http_access deny all")
	} else {
		w("http_access allow all")
	}
	return b.String()
}

func (s *Squid) hostsFile() string {
	var b strings.Builder
	names := make([]string, 0, len(s.Hosts))
	for n := range s.Hosts {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s %s\n", s.Hosts[n], n)
	}
	return b.String()
}

// handOver lets squid's unprivileged user write its logs in Dir and read
// the password file: under root squid runs as cache_effective_user.
func (s *Squid) handOver() error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup(squidUser())
	if err != nil {
		return fmt.Errorf("squid's user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// The folders above Dir (t.TempDir's are 0700) must be traversable.
	for d := filepath.Dir(s.Dir); d != "/" && d != "."; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, st.Mode().Perm()|0o011); err != nil {
				return err
			}
		}
	}
	return filepath.Walk(s.Dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	})
}

func squidUser() string {
	if _, err := user.Lookup("proxy"); err == nil {
		return "proxy"
	}
	return "nobody"
}

// AccessLog returns the lines of squid's access log so far. Squid writes a
// line when a transaction ends: for a CONNECT, when the tunnel closes (or at
// once when it is refused).
func (s *Squid) AccessLog() []AccessEntry {
	f, err := os.Open(filepath.Join(s.Dir, "access.log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []AccessEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if e, ok := parseAccess(sc.Text()); ok {
			out = append(out, e)
		}
	}
	return out
}

// AccessEntry is one line of squid's native access log format.
type AccessEntry struct {
	Client string // client IP
	Result string // e.g. TCP_TUNNEL/200, TCP_DENIED/403, TCP_DENIED/407
	Bytes  int64  // bytes sent to the client
	Method string // e.g. CONNECT
	URL    string // for CONNECT, host:port
	User   string // authenticated user, "-" when none
}

func (e AccessEntry) String() string {
	return fmt.Sprintf("%s %s %s %s %s %d", e.Client, e.User, e.Method, e.URL, e.Result, e.Bytes)
}

// parseAccess reads "time elapsed client result/status bytes method url user hierarchy type".
func parseAccess(line string) (AccessEntry, bool) {
	f := strings.Fields(line)
	if len(f) < 8 {
		return AccessEntry{}, false
	}
	n, _ := strconv.ParseInt(f[4], 10, 64)
	return AccessEntry{Client: f[2], Result: f[3], Bytes: n, Method: f[5], URL: f[6], User: f[7]}, true
}

// htpasswd returns an htpasswd file with an MD5-crypt ($1$) entry per user,
// a format squid's basic_ncsa_auth reads (it does not read {SHA}).
func htpasswd(users map[string]string) (string, error) {
	names := make([]string, 0, len(users))
	for n := range users {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		if strings.ContainsAny(n, ":\n") {
			return "", fmt.Errorf("proxy user name %q: no ':' or newline allowed", n)
		}
		salt := make([]byte, 8)
		rand.Read(salt)
		const alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		for i := range salt {
			salt[i] = alphabet[int(salt[i])%len(alphabet)]
		}
		fmt.Fprintf(&b, "%s:%s\n", n, MD5Crypt(users[n], string(salt)))
	}
	return b.String(), nil
}

// MD5Crypt returns the MD5-crypt ("$1$salt$hash") of password, the
// algorithm of glibc's crypt() with a "$1$" salt and of `openssl passwd -1`.
// It is here for test proxies' password files only: MD5-crypt is no way to
// store a real password.
func MD5Crypt(password, salt string) string {
	const magic = "$1$"
	if len(salt) > 8 {
		salt = salt[:8]
	}
	pw := []byte(password)
	alt := md5.Sum(append(append(append([]byte{}, pw...), salt...), pw...))
	h := md5.New()
	h.Write(pw)
	h.Write([]byte(magic + salt))
	for i := len(pw); i > 0; i -= 16 {
		h.Write(alt[:min(i, 16)])
	}
	for i := len(pw); i > 0; i >>= 1 {
		if i&1 != 0 {
			h.Write([]byte{0})
		} else {
			h.Write(pw[:1])
		}
	}
	sum := h.Sum(nil)
	for i := range 1000 {
		h := md5.New()
		if i&1 != 0 {
			h.Write(pw)
		} else {
			h.Write(sum)
		}
		if i%3 != 0 {
			h.Write([]byte(salt))
		}
		if i%7 != 0 {
			h.Write(pw)
		}
		if i&1 != 0 {
			h.Write(sum)
		} else {
			h.Write(pw)
		}
		sum = h.Sum(nil)
	}
	const itoa64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	var out []byte
	enc := func(v uint32, n int) {
		for ; n > 0; n-- {
			out = append(out, itoa64[v&0x3f])
			v >>= 6
		}
	}
	for _, t := range [][3]int{{0, 6, 12}, {1, 7, 13}, {2, 8, 14}, {3, 9, 15}, {4, 10, 5}} {
		enc(uint32(sum[t[0]])<<16|uint32(sum[t[1]])<<8|uint32(sum[t[2]]), 4)
	}
	enc(uint32(sum[11]), 2)
	return magic + salt + "$" + string(out)
}
