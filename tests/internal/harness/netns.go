package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// NetNS is a Linux network namespace made for one test, so that traffic
// crosses a real network boundary (a veth link, a firewall, a proxy that Go
// would bypass on loopback) without leaving the machine. It needs root (or
// CAP_SYS_ADMIN) and iproute2's ip; see NetNSUsable.
//
// The test process itself stays in its own namespace: Listen and
// DialContext make sockets inside the namespace from a thread that enters it
// and then exits, and Command runs a program inside it with `ip netns exec`.
type NetNS struct {
	// Name is the namespace's name under /run/netns. Static.
	Name string

	mu     sync.Mutex
	fd     int  // guarded by mu: an open /run/netns/<Name>, for setns
	closed bool // guarded by mu
}

// NetNSUsable returns nil when network namespaces can be made here, or an
// error saying why not (not root, ip missing, no permission).
func NetNSUsable() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root (CI runs as root)")
	}
	if _, err := LookSbin("ip"); err != nil {
		return fmt.Errorf("iproute2's ip is not installed (scripts/setup.sh): %w", err)
	}
	ns, err := NewNetNS("probe")
	if err != nil {
		return err
	}
	return ns.Close()
}

// NewNetNS makes a namespace named prefix-<pid>-<random> (unique, so that
// tests run side by side; the pid lets SweepNetNS tell leftovers) with its
// loopback up. Close deletes it.
func NewNetNS(prefix string) (*NetNS, error) {
	suffix := make([]byte, 4)
	rand.Read(suffix)
	name := prefix + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(suffix)
	if err := IP("netns", "add", name); err != nil {
		return nil, err
	}
	n := &NetNS{Name: name, fd: -1}
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("failed to open network namespace %s: %w", name, err)
	}
	n.fd = fd
	if err := IP("-n", name, "link", "set", "lo", "up"); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Close deletes the namespace. Processes still inside keep it alive until
// they exit, but it is no longer reachable by name. It is idempotent.
func (n *NetNS) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	if n.fd >= 0 {
		unix.Close(n.fd)
	}
	return IP("netns", "del", n.Name)
}

// IP runs iproute2's ip with args and returns its error with its output.
func IP(args ...string) error {
	return run(nil, ipPath(), args...)
}

// Run runs bin with args inside the namespace (`ip netns exec`), with stdin
// when not nil, and returns an error carrying the output when it fails.
func (n *NetNS) Run(stdin []byte, bin string, args ...string) error {
	return run(stdin, ipPath(), append([]string{"netns", "exec", n.Name, bin}, args...)...)
}

func run(stdin []byte, bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Command returns the program and arguments that run bin inside the
// namespace, for Start: `ip netns exec` enters the namespace and then execs
// bin, so the process Start sees is bin itself.
func (n *NetNS) Command(bin string, args ...string) (string, []string) {
	return ipPath(), append([]string{"netns", "exec", n.Name, bin}, args...)
}

// do runs f on a thread of its own that has entered the namespace. The
// thread is never unlocked: it ends with the goroutine, so no other
// goroutine ever runs in the namespace by mistake. Sockets made by f stay in
// the namespace for their whole life, whichever thread uses them later.
func (n *NetNS) do(f func()) error {
	n.mu.Lock()
	fd, closed := n.fd, n.closed
	n.mu.Unlock()
	if closed {
		return fmt.Errorf("network namespace %s is closed", n.Name)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("failed to enter network namespace %s: %w", n.Name, err)
			return
		}
		f()
		errc <- nil
	}()
	return <-errc
}

// Listen listens inside the namespace, e.g. on "127.0.0.1:0" of its own
// loopback.
func (n *NetNS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	var err error
	if nerr := n.do(func() { ln, err = net.Listen(network, addr) }); nerr != nil {
		return nil, nerr
	}
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s in %s: %w", addr, n.Name, err)
	}
	return ln, nil
}

// DialContext connects from inside the namespace. addr must be an IP
// address and port: a name would be resolved by the test's own resolver.
func (n *NetNS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	var d net.Dialer
	// With one address the dialer connects on the calling goroutine (no
	// parallel fallback), so the socket is made on the namespaced thread.
	if nerr := n.do(func() { c, err = d.DialContext(ctx, network, addr) }); nerr != nil {
		return nil, nerr
	}
	if err != nil {
		return nil, fmt.Errorf("failed to dial %s from %s: %w", addr, n.Name, err)
	}
	return c, nil
}

// Veth links namespaces a and b with a veth pair whose ends get the
// addresses (CIDR, e.g. "10.200.0.1/30") aAddr and bAddr, and brings both
// up. The pair is made directly inside the namespaces, so it never appears
// in the test's own namespace; it goes away with them.
func Veth(a *NetNS, aAddr string, b *NetNS, bAddr string) error {
	suffix := make([]byte, 3)
	rand.Read(suffix)
	ta, tb := "va"+hex.EncodeToString(suffix), "vb"+hex.EncodeToString(suffix) // <= 15 bytes
	if err := IP("link", "add", ta, "netns", a.Name, "type", "veth", "peer", "name", tb, "netns", b.Name); err != nil {
		return err
	}
	for _, end := range []struct {
		ns        *NetNS
		dev, cidr string
	}{{a, ta, aAddr}, {b, tb, bAddr}} {
		if err := IP("-n", end.ns.Name, "addr", "add", end.cidr, "dev", end.dev); err != nil {
			return err
		}
		if err := IP("-n", end.ns.Name, "link", "set", end.dev, "up"); err != nil {
			return err
		}
	}
	return nil
}

// SweepNetNS deletes namespaces made by NewNetNS with one of the prefixes
// whose maker process has exited and that hold no process: what a test run
// killed before its clean-up (a -timeout panic, SIGKILL) left behind. The
// maker's pid is part of each name, so namespaces of runs still going are
// left alone. It returns the names it deleted.
func SweepNetNS(prefixes ...string) []string {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return nil
	}
	var deleted []string
	for _, e := range entries {
		name := e.Name()
		var rest string
		for _, p := range prefixes {
			if r, ok := strings.CutPrefix(name, p+"-"); ok {
				rest = r
			}
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || unix.Kill(pid, 0) != unix.ESRCH {
			continue // not ours, or its maker still runs
		}
		out, err := exec.Command(ipPath(), "netns", "pids", name).Output()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			continue
		}
		if IP("netns", "del", name) == nil {
			deleted = append(deleted, name)
		}
	}
	return deleted
}

// LookSbin finds an administration program (ip, nft, squid) on PATH or, as
// a PATH without them is common for non-login shells, in /usr/sbin or /sbin.
func LookSbin(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if st, serr := os.Stat(dir + "/" + name); serr == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return dir + "/" + name, nil
		}
	}
	return "", err
}

// ipPath is iproute2's ip, or "ip" for the error that says it is missing.
func ipPath() string {
	if p, err := LookSbin("ip"); err == nil {
		return p
	}
	return "ip"
}
