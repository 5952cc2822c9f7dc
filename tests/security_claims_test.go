package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestModuleListensOnlyForMetrics: SECURITY.md "reachability of the edge
// LAN" — the module dials out and listens for nothing from the cloud: with a
// tunnel open, the only socket of the real binary that accepts connections
// (TCP LISTEN) or datagrams from anyone (unconnected UDP) is its metrics
// server. Read from /proc, as an operator's `ss -lntup` would.
func TestModuleListensOnlyForMetrics(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{})
	c.openTunnel(ctx, token) // a live tunnel: its sockets are outbound

	pid := c.module.Pid()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	if len(inodes) == 0 {
		t.Fatal("the module has no sockets at all: /proc not readable?")
	}
	var open []string
	for _, f := range []string{"tcp", "tcp6", "udp", "udp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(l)
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			local, remote, state := fields[1], fields[2], fields[3]
			listening := strings.HasPrefix(f, "tcp") && state == "0A" ||
				strings.HasPrefix(f, "udp") && strings.HasSuffix(remote, ":0000")
			if listening {
				port, _ := strconv.ParseUint(local[strings.LastIndex(local, ":")+1:], 16, 16)
				open = append(open, fmt.Sprintf("%s port %d", f, port))
			}
		}
	}
	_, metricsPort, err := net.SplitHostPort(c.metrics)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"tcp port " + metricsPort}; fmt.Sprint(open) != fmt.Sprint(want) {
		t.Errorf("the module accepts on %v, want only its metrics server %v", open, want)
	}
}

// TestDefaultRefusesSpecialAddresses: SECURITY.md "Aim at the device
// itself" through IoT Hub with the real binary and the default (empty)
// allowedRemoteHosts: every spelling of the loopback cloud is answered 400
// naming the rule and the setting, and the cloud never sees a connection.
func TestDefaultRefusesSpecialAddresses(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{env: []string{"RTSPTUNNEL_ALLOWEDREMOTEHOSTS=[]"}})
	s, err := c.cloud.NewSession(token)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	port, path := u.Port(), u.Path
	for _, host := range []string{"127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]", "2130706433", "127.1", "169.254.169.254", "[fd00:ec2::254]"} {
		status, raw := c.invoke(ctx, "tunnelOpen", openPayload{"wss://" + host + ":" + port + path, token, 554})
		var body struct{ Code, Target, Message string }
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatalf("%s: body %s: %v", host, raw, err)
		}
		// Non-standard numeric forms are refused whatever the list says.
		if status != 400 || body.Target != "remoteEndpoint" ||
			!strings.Contains(body.Message, "only a host named exactly in allowedRemoteHosts") && !strings.Contains(body.Message, "non-standard form of the IP address") {
			t.Errorf("%s: %d %s, want 400 naming the rule and allowedRemoteHosts", host, status, raw)
		}
	}
	if n := s.Attempts(); n != 0 {
		t.Errorf("the loopback cloud saw %d connections", n)
	}
}
