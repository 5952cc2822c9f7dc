package tests

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
)

// Module pings in the fault tests: a dead relay is found within
// faultPingInterval+faultPingTimeout even when nothing reaches the module.
const (
	faultPingInterval = time.Second
	faultPingTimeout  = 2 * time.Second
	// faultSlack is what a loaded 2-core machine running -race may add to
	// a bound; bounds are generous on purpose, timing goals live in benchmarks.
	faultSlack = 10 * time.Second
)

// openSession returns the id of the only session the module reports open.
func (c *chain) openSession(ctx context.Context) string {
	c.t.Helper()
	var id string
	c.waitReported(ctx, "one open session", func(rep map[string]any) bool {
		sessions, _ := rep["sessions"].(map[string]any)
		id = ""
		n := 0
		for k, v := range sessions {
			if s, _ := v.(map[string]any); s["state"] == "open" {
				id, n = k, n+1
			}
		}
		return n == 1
	})
	return id
}

// TestRelayKilled ends the cloud side abruptly while video streams through a
// passthrough tunnel: the relay SIGKILLed (the kernel closes its sockets, no
// close frame), and a TCP RST on the module's websocket connection (a
// middlebox or crashed host). Each time the module frees the camera within
// its ping bound, reports the session closed as remote_error, and the next
// tunnel opens and plays normally.
func TestRelayKilled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		link  bool // a fault proxy on the module → relay link
		fault func(t *testing.T, rc *relayChain)
		after func(t *testing.T, ctx context.Context, rc *relayChain)
	}{
		{
			name: "SIGKILL",
			fault: func(t *testing.T, rc *relayChain) {
				if err := rc.relay.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			},
			after: func(t *testing.T, ctx context.Context, rc *relayChain) {
				<-rc.relay.Done()
				rc.startRelay(ctx) // the same ports
			},
		},
		{
			name: "TCP RST",
			link: true,
			fault: func(t *testing.T, rc *relayChain) {
				if n := rc.link.Reset(); n != 1 {
					t.Fatalf("reset %d module connections, want 1", n)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			rc := newRelayChain(t, ctx, relayOptions{linkProxy: tc.link, moduleEnv: []string{
				"RTSPTUNNEL_PINGINTERVAL=" + faultPingInterval.String(),
				"RTSPTUNNEL_PINGTIMEOUT=" + faultPingTimeout.String(),
				// The relay is on loopback, which the module refuses unless named.
				"RTSPTUNNEL_ALLOWEDREMOTEHOSTS=127.0.0.1",
			}})
			url1 := rc.ready.Camera("cam1")
			playCtx, stopPlayer := context.WithCancel(ctx)
			defer stopPlayer()
			go harness.FFProbe(playCtx, url1, time.Minute)
			testutil.WaitUntil(t, ctx, "video flowing", func() bool { return rc.cam.Plays() == 1 && rc.cam.ActiveConns() == 1 })
			id := rc.openSession(ctx)
			time.Sleep(time.Second) // stream a while

			start := time.Now()
			tc.fault(t, rc)
			testutil.WaitUntil(t, ctx, "the module to free the camera", func() bool { return rc.cam.ActiveConns() == 0 })
			freed := time.Since(start)
			bound := faultPingInterval + faultPingTimeout
			if freed > bound+faultSlack {
				t.Errorf("camera freed %s after the fault, want within the ping bound %s (+%s slack)", freed, bound, faultSlack)
			}
			sess := rc.waitClosedAs(ctx, id, "remote_error")
			if code, ok := sess["closeCode"].(float64); ok && code != -1 {
				t.Errorf("closeCode %v, want -1: no close frame was exchanged", code)
			}
			waitLog(t, ctx, rc.module, "session closed", func(m map[string]any) bool {
				return m["session"] == id && m["outcome"] == "remote_error"
			})
			t.Logf("%s: camera freed %s later; reported %v", tc.name, freed.Round(time.Millisecond), sess)
			stopPlayer()

			if tc.after != nil {
				tc.after(t, ctx, rc)
			}
			// The next tunnel: methods answer, video plays.
			p, err := harness.FFProbe(ctx, rc.ready.Camera("cam1"), 3*time.Second)
			if err != nil || p.Packets < 50 {
				t.Fatalf("the next tunnel: %d packets, %v", p.Packets, err)
			}
			rc.waitReported(ctx, "two sessions opened, none failed", func(rep map[string]any) bool {
				sum, _ := rep["summary"].(map[string]any)
				return sum["opened"] == float64(2) && sum["failed"] == float64(0)
			})
		})
	}
}

// TestModuleKilled SIGKILLs the module with two tunnels carrying video, as
// a crash or an OOM kill would, and starts it again as the IoT Edge runtime
// does: the twin still lists both sessions as open (nobody was left to say
// otherwise); the relay sees both tunnels end; the new process reports them
// closed as module_restarted with a lastError that says why, and opens the
// next tunnel normally.
func TestModuleKilled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rc := newRelayChain(t, ctx, relayOptions{moduleEnv: []string{"RTSPTUNNEL_ALLOWEDREMOTEHOSTS=127.0.0.1"}})
	playCtx, stopPlayers := context.WithCancel(ctx)
	defer stopPlayers()
	for _, name := range []string{"cam1", "cam2"} {
		go harness.FFProbe(playCtx, rc.ready.Camera(name), time.Minute)
	}
	testutil.WaitUntil(t, ctx, "video flowing from both cameras", func() bool { return rc.cam.Plays() == 1 && rc.cam2.Plays() == 1 })
	var ids []string
	rc.waitReported(ctx, "two open sessions", func(rep map[string]any) bool {
		ids = ids[:0]
		sessions, _ := rep["sessions"].(map[string]any)
		for id, v := range sessions {
			if s, _ := v.(map[string]any); s["state"] == "open" {
				ids = append(ids, id)
			}
		}
		return len(ids) == 2
	})

	if err := rc.module.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-rc.module.Done()
	// The dead process's state stays in the twin.
	for _, id := range ids {
		if s := reportedSession(rc.reported(), id); s == nil || s["state"] != "open" {
			t.Fatalf("after the kill the twin shows session %s as %v, want still open", id, s)
		}
	}
	// The relay sees both tunnels end (the kernel closed the module's
	// sockets).
	for _, id := range ids {
		waitLog(t, ctx, rc.relay, "session closed", func(m map[string]any) bool {
			body, _ := m["method_body"].(map[string]any)
			return body["sessionId"] == id
		})
	}
	testutil.WaitUntil(t, ctx, "the cameras freed", func() bool { return rc.cam.ActiveConns() == 0 && rc.cam2.ActiveConns() == 0 })
	stopPlayers()

	rc.startModule(ctx, rc.moduleEnv...)
	for _, id := range ids {
		s := rc.waitClosedAs(ctx, id, "module_restarted")
		if e, _ := s["lastError"].(string); !strings.Contains(e, "restarted") {
			t.Errorf("reconciled session %s: lastError %q, want one that says the module restarted", id, e)
		}
		if s["closeCode"] != float64(-1) || s["target"] == nil || s["opened"] == nil {
			t.Errorf("reconciled session %s: %v, want closeCode -1 and what was known of it", id, s)
		}
	}
	line := waitLog(t, ctx, rc.module, "sessions left open by an earlier run reported closed", nil)
	if line["count"] != float64(2) {
		t.Errorf("reconcile log line %v, want count 2", line)
	}
	p, err := harness.FFProbe(ctx, rc.ready.Camera("cam1"), 3*time.Second)
	if err != nil || p.Packets < 50 {
		t.Fatalf("the next tunnel after the restart: %d packets, %v", p.Packets, err)
	}
	rep := rc.reported()
	if sum, _ := rep["summary"].(map[string]any); sum["opened"] != float64(1) {
		t.Errorf("summary %v, want the new process's own count (1 opened)", sum)
	}
}

// hubKeepAliveBound is how soon the module notices a hub link that went
// silently dead. Its MQTT keep-alive (modules/rtsptunnel/internal/hub
// conn.go; paho's ping.go) sends a PINGREQ once nothing was received for
// 30 s and drops the connection when the PINGRESP has not come 10 s later;
// paho checks both every 5 s, and the timeout check, made a hair less than
// 10 s after the ping on its tick, fires one tick later: 30+5+10+5 s.
const hubKeepAliveBound = 30*time.Second + 5*time.Second + 10*time.Second + 5*time.Second

// TestHubHalfOpen makes the module's MQTT connection half-open while a
// tunnel streams: edgeHub's side silently stops answering, no FIN, no RST
// (a NAT or firewall on the way dropped the connection's state), while new
// connections get through. The module notices through MQTT keep-alive
// within the stated bound, reconnects, answers methods again, and the open
// tunnel (its own connection) keeps flowing throughout.
func TestHubHalfOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for MQTT keep-alive (up to 50 s); -short skips it")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{noStart: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	link := harness.Forward(ln, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", c.emu.MQTTAddr())
	})
	t.Cleanup(link.Close)
	c.startModule(ctx, "RTSPTUNNEL_HUBPORT="+strconv.Itoa(port(t, link.Addr())))

	s, _ := c.openTunnel(ctx, token)
	const watch = hubKeepAliveBound + 20*time.Second
	player := harness.StartFFProbe(ctx, rtspURL(s), watch)
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitUntil(t, ctx, "video flowing", func() bool { return c.cam.Plays() == 1 })
	time.Sleep(2 * time.Second)
	dropped := c.cam.Dropped()
	connects := c.emu.Connects(edgeDevice, moduleID)

	held := time.Now()
	if n := link.Hold(); n != 1 {
		t.Fatalf("held %d hub connections, want the module's one", n)
	}
	waitLog(t, ctx, c.module, "connection lost", nil)
	noticed := time.Since(held)
	if err := c.emu.WaitConnects(ctx, edgeDevice, moduleID, connects+1); err != nil {
		t.Fatalf("the module did not reconnect: %v", err)
	}
	back := time.Since(held)
	t.Logf("half-open hub link: noticed after %s (keep-alive bound %s), reconnected after %s",
		noticed.Round(time.Millisecond), hubKeepAliveBound, back.Round(time.Millisecond))
	if noticed > hubKeepAliveBound+faultSlack {
		t.Errorf("the module noticed the dead hub link after %s, want within %s (+%s slack)", noticed, hubKeepAliveBound, faultSlack)
	}
	c.waitReady(ctx)
	// Methods answer again: a second tunnel opens and plays.
	s2, _ := c.openTunnel(ctx, token)
	mustPlay(t, ctx, rtspURL(s2), "a tunnel opened after the reconnect")

	probe, probeErr := player.Wait()
	// 25 fps; allow for ffprobe's start-up, not for lost packets.
	if want := int(watch.Seconds()*25) * 9 / 10; probeErr != nil || probe.Packets < want {
		t.Errorf("the open tunnel across the half-open hub link: %d packets in %s, %v; want >= %d", probe.Packets, watch, probeErr, want)
	}
	if d := c.cam.Dropped() - dropped; d != 0 {
		t.Errorf("the camera dropped %d packets meanwhile (the tunnel stalled)", d)
	}
}

// TestRepublishAfterReconnect makes IoT Hub lose the module's reported
// properties while it is away (what lost patches, or a hub restored from an
// earlier state, look like): the emulator is stopped, the module twin's
// reported section is emptied in its state file, and the emulator comes
// back. Only a full re-publish after the reconnect brings back what did not
// change meanwhile (the session's target and opening time, the summary's
// counts); without it the twin would stay empty.
func TestRepublishAfterReconnect(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{})
	// An open tunnel that carries nothing: no byte count changes, so the
	// module has nothing new to patch and only the re-publish can restore
	// the state.
	c.openTunnel(ctx, token)
	id := c.openSession(ctx)
	c.waitReported(ctx, "the session open with its target", func(rep map[string]any) bool {
		sess := reportedSession(rep, id)
		return sess != nil && sess["state"] == "open" && sess["target"] != nil
	})

	if err := c.emu.Close(); err != nil {
		t.Fatal(err)
	}
	forgetReported(t, c.emuOpts.Dir, edgeDevice, moduleID)
	c.startEmulator()
	if rep := c.reported(); reportedSession(rep, id) != nil || rep["summary"] != nil {
		t.Fatalf("the hub still has the module's state after it was emptied: %v", rep)
	}
	c.waitReady(ctx)
	rep := c.waitReported(ctx, "the whole state re-published", func(rep map[string]any) bool {
		sess := reportedSession(rep, id)
		sum, _ := rep["summary"].(map[string]any)
		return sess != nil && sess["state"] == "open" && sess["target"] == c.cam.ListenAddr() && sess["opened"] != nil &&
			sum["active"] == float64(1) && sum["opened"] == float64(1)
	})
	t.Logf("re-published after the reconnect: %v", reportedSession(rep, id))
}

// forgetReported empties the reported properties of a module twin in the
// stopped emulator's state file (state.json: identities[].twin.reported),
// keeping their version.
func forgetReported(t *testing.T, dir, deviceID, moduleID string) {
	t.Helper()
	path := filepath.Join(dir, "state.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var state map[string]any
	if err := json.Unmarshal(b, &state); err != nil {
		t.Fatalf("the emulator's %s: %v", path, err)
	}
	ids, _ := state["identities"].([]any)
	found := false
	for _, v := range ids {
		e, _ := v.(map[string]any)
		if e["deviceId"] != deviceID || e["moduleId"] != moduleID {
			continue
		}
		tw, _ := e["twin"].(map[string]any)
		rep, _ := tw["reported"].(map[string]any)
		if rep == nil {
			break
		}
		rep["props"], rep["meta"] = map[string]any{}, map[string]any{}
		found = true
	}
	if !found {
		t.Fatalf("no twin.reported for %s/%s in %s: the emulator's state format changed; adapt forgetReported", deviceID, moduleID, path)
	}
	if b, err = json.MarshalIndent(state, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
