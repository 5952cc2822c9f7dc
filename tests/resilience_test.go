package tests

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/testcloud"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
)

// open creates a cloud session and opens a tunnel to it on localPort,
// through the endpoint (the session's own URL when empty). It returns the
// session, the module's session id and the target it dialled.
func (c *chain) open(ctx context.Context, localPort int, endpoint string) (*testcloud.Session, string, string) {
	c.t.Helper()
	s, err := c.cloud.NewSession(token)
	if err != nil {
		c.t.Fatal(err)
	}
	if endpoint == "" {
		endpoint = s.URL()
	} else {
		endpoint += "/tunnels/" + s.ID()
	}
	status, body := c.invoke(ctx, "tunnelOpen", openPayload{endpoint, token, localPort})
	if status != 200 {
		c.t.Fatalf("tunnelOpen on port %d answered %d %s", localPort, status, body)
	}
	var ok struct{ SessionID, Target string }
	if err := json.Unmarshal(body, &ok); err != nil || ok.SessionID == "" {
		c.t.Fatalf("tunnelOpen 200 body %s: want sessionId (%v)", body, err)
	}
	return s, ok.SessionID, ok.Target
}

// reportedSession returns the reported object of session id, or nil.
func reportedSession(rep map[string]any, id string) map[string]any {
	sessions, _ := rep["sessions"].(map[string]any)
	s, _ := sessions[id].(map[string]any)
	return s
}

// waitClosedAs waits until the reported state shows session id closed with
// reason, and returns its object.
func (c *chain) waitClosedAs(ctx context.Context, id, reason string) map[string]any {
	c.t.Helper()
	rep := c.waitReported(ctx, "session "+id+" closed ("+reason+")", func(rep map[string]any) bool {
		s := reportedSession(rep, id)
		return s != nil && s["state"] == "closed" && s["closeReason"] == reason
	})
	return reportedSession(rep, id)
}

// procStats is what /proc tells of a process.
type procStats struct {
	rssKB int
	fds   int
}

func readProc(t *testing.T, pid int) procStats {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var st procStats
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			st.rssKB, _ = strconv.Atoi(f[1])
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	st.fds = len(fds)
	return st
}

// tcpServer is a stand-in camera with a fixed behaviour for every connection.
type tcpServer struct {
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
	active atomic.Int64
}

// newTCPServer serves every connection with serve (which must return when the
// connection is closed) and closes it afterwards.
func newTCPServer(t *testing.T, serve func(net.Conn)) *tcpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tcpServer{ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.active.Add(1)
			s.wg.Go(func() {
				defer s.active.Add(-1)
				defer c.Close()
				serve(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *tcpServer) addr() string { return s.ln.Addr().String() }

// firehose writes random bytes as fast as the peer takes them, and discards
// what it reads.
func firehose(c net.Conn) {
	go io.Copy(io.Discard, c)
	buf := make([]byte, 32<<10)
	rand.Read(buf)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// sink accepts and never reads nor writes: a hung camera. It returns when
// the peer has closed its end (POLLRDHUP sees that even with unread data
// pending) or the connection is closed.
func sink(c net.Conn) {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return
	}
	for {
		hup := false
		err := raw.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
			if n, _ := unix.Poll(fds, 100); n > 0 {
				hup = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
			}
		})
		if err != nil || hup {
			return
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestHubOutageLong restarts IoT Hub/edgeHub (the emulator) after a 30 s
// outage while a tunnel streams: no video packet is lost, the module comes
// back (the delay after the hub's return is logged), methods answer again and
// the reported state is published again.
func TestHubOutageLong(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30 s outage; -short skips it")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{})

	s, _ := c.openTunnel(ctx, token)
	const watch = 40 * time.Second
	player := harness.StartFFProbe(ctx, rtspURL(s), watch)
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	rep := c.waitReported(ctx, "one active session", func(rep map[string]any) bool {
		sum, _ := rep["summary"].(map[string]any)
		return sum["active"] == float64(1)
	})
	version := rep["$version"].(float64)
	time.Sleep(2 * time.Second)
	dropped := c.cam.Dropped()

	c.restartEmulator(30 * time.Second)
	back := time.Now()
	c.waitReady(ctx)
	info, _ := c.emu.ConnInfo(edgeDevice, moduleID)
	reconnect := info.ConnectedAt.Sub(back)
	t.Logf("module reconnected %s after the hub's return (30 s outage)", reconnect.Round(time.Millisecond))
	// Through a gateway the backoff is capped at 2 s, against 30 s direct to
	// IoT Hub: a 20 s bound tells the two apart and leaves a loaded machine
	// all the slack it needs for the TLS handshake under -race.
	if reconnect > 20*time.Second {
		t.Errorf("module reconnected %s after the hub came back, want the 2 s gateway cap (bound 20 s; 30 s is the hub's)", reconnect)
	}
	c.waitReported(ctx, "the state re-published after the outage", func(rep map[string]any) bool {
		sum, _ := rep["summary"].(map[string]any)
		v, _ := rep["$version"].(float64)
		return v > version && sum["active"] == float64(1)
	})
	// Methods answer again: a second tunnel opens.
	s2, _ := c.openTunnel(ctx, token)
	s2.Close(websocket.StatusNormalClosure, "done")

	probe, probeErr := player.Wait()
	// 25 fps; allow for ffprobe's start-up, not for lost packets.
	want := int(watch.Seconds()*25) * 9 / 10
	if probeErr != nil || probe.Packets < want {
		t.Fatalf("through a 30 s outage: %d packets in %s, %v; want >= %d", probe.Packets, watch, probeErr, want)
	}
	if d := c.cam.Dropped() - dropped; d != 0 {
		t.Errorf("the camera dropped %d packets during the outage (the tunnel stalled)", d)
	}
	t.Logf("through the outage: %d packets, %d keyframes in %s", probe.Packets, probe.Keyframes, probe.Elapsed.Round(time.Millisecond))
}

// TestTokenRenewalUnderLoad renews 3 s SAS tokens (enforced by the emulator)
// for 10 s while four callers invoke methods back to back and a tunnel
// streams. The callers retry a 404103 from the hub as the relay does (the
// module unsubscribes from methods before a renewal, so a call that finds it
// unsubscribed never reached it); no call may fail otherwise (no 504, no
// unanswered call), no video packet may be lost.
func TestTokenRenewalUnderLoad(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{
		env: []string{"RTSPTUNNEL_TOKENLIFETIME=3s"},
		emu: emulator.Options{MaxTokenLifetime: 3 * time.Second},
	})
	s, _ := c.openTunnel(ctx, token)
	const watch = 10 * time.Second
	player := harness.StartFFProbe(ctx, rtspURL(s), watch)
	connects := c.emu.Connects(edgeDevice, moduleID)
	deadline := time.Now().Add(watch)
	var calls, failures, retries atomic.Int64
	invoke := func() (int, json.RawMessage, error) { return c.invokeAsRelay(ctx, json.RawMessage(`{}`), &retries) }
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				status, resp, err := invoke()
				calls.Add(1)
				if err != nil || status != 400 {
					if failures.Add(1) <= 5 {
						t.Errorf("call during renewals: %d %s, %v", status, resp, err)
					}
				}
			}
		})
	}
	wg.Wait()
	probe, probeErr := player.Wait()
	renewals := c.emu.Connects(edgeDevice, moduleID) - connects
	t.Logf("%d calls across %d renewals: %d failed, %d retries after a 404103; video %d packets", calls.Load(), renewals, failures.Load(), retries.Load(), probe.Packets)
	if renewals < 3 {
		t.Errorf("%d renewals in %s with 3 s tokens", renewals, watch)
	}
	if want := int(watch.Seconds()*25) * 9 / 10; probeErr != nil || probe.Packets < want {
		t.Errorf("video across renewals: %d packets, %v; want >= %d", probe.Packets, probeErr, want)
	}
}

// TestCameraReset resets the camera's TCP connection mid-stream (a camera
// that reboots): the tunnel ends with 1011 at once, the reported state says
// camera_error, and a new tunnel works once the camera answers again.
func TestCameraReset(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{noStart: true})
	px, err := harness.NewFaultProxy(c.cam.ListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	c.startModule(ctx, `RTSPTUNNEL_TARGETS={"554":"`+px.Addr()+`"}`, "RTSPTUNNEL_IDLETIMEOUT=3s")

	s, id, target := c.open(ctx, 554, "")
	if target != px.Addr() {
		t.Errorf("target %q, want the proxy %q", target, px.Addr())
	}
	player := harness.StartFFProbe(ctx, rtspURL(s), 30*time.Second)
	testutil.WaitUntil(t, ctx, "video flowing", func() bool { return c.cam.Plays() == 1 })
	time.Sleep(time.Second)

	reset := time.Now()
	if n := px.Reset(); n != 1 {
		t.Fatalf("reset %d camera connections, want 1", n)
	}
	// The RST ends the tunnel at once (1011 camera_error, checked below by
	// outcome). The wait is a generous 30 s against the slow paths: a module
	// that missed the reset ends the tunnel on the 60 s default idle
	// timeout (1000 idle), or never.
	select {
	case <-s.Closed():
	case <-time.After(30 * time.Second):
		t.Fatal("the tunnel is still open 30 s after the camera reset")
	}
	ended := time.Since(reset)
	if code, reason := s.CloseStatus(); code != websocket.StatusInternalError {
		t.Errorf("websocket close %d %q, want 1011", code, reason)
	}
	sess := c.waitClosedAs(ctx, id, "camera_error")
	if sess["closeCode"] != float64(1011) || sess["lastError"] == nil {
		t.Errorf("reported session %v, want closeCode 1011 and a lastError", sess)
	}
	player.Wait()
	t.Logf("camera reset: tunnel closed 1011 %s later; reported %v", ended.Round(time.Millisecond), sess["lastError"])
	testutil.WaitUntil(t, ctx, "the camera connection gone", func() bool { return c.cam.ActiveConns() == 0 })

	s2, _, _ := c.open(ctx, 554, "")
	mustPlay(t, ctx, rtspURL(s2), "after the camera came back")
}

// TestCameraHangs covers cameras that stop talking: one that freezes
// mid-stream, and one that accepts the connection and never answers. Each
// tunnel ends after the idle timeout (3 s here) with 1000 and reason idle;
// new tunnels work when the camera answers again.
func TestCameraHangs(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{noStart: true})
	px, err := harness.NewFaultProxy(c.cam.ListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	mute := newTCPServer(t, sink)
	const idle = 3 * time.Second
	c.startModule(ctx, `RTSPTUNNEL_TARGETS={"554":"`+px.Addr()+`","555":"`+mute.addr()+`"}`, "RTSPTUNNEL_IDLETIMEOUT="+idle.String())

	// Freezes mid-stream.
	s, id, _ := c.open(ctx, 554, "")
	go harness.FFProbe(ctx, rtspURL(s), 30*time.Second)
	testutil.WaitUntil(t, ctx, "video flowing", func() bool { return c.cam.Plays() == 1 })
	time.Sleep(time.Second)
	frozen := time.Now()
	px.Freeze()
	// idleWait is generous, for a loaded machine, and still half the 60 s
	// default idle timeout a module ignoring the setting would apply (the
	// reason, idle, is checked by outcome).
	const idleWait = 30 * time.Second
	select {
	case <-s.Closed():
	case <-time.After(idleWait):
		t.Fatalf("the tunnel is still open %s after the camera froze (idle timeout %s)", idleWait, idle)
	}
	ended := time.Since(frozen)
	if code, _ := s.CloseStatus(); code != websocket.StatusNormalClosure {
		t.Errorf("frozen camera: websocket close %d, want 1000", code)
	}
	// The idle clock starts at the last byte, a frame or so before the freeze.
	if ended < idle-time.Second {
		t.Errorf("frozen camera: tunnel ended after %s, before the %s idle timeout", ended, idle)
	}
	c.waitClosedAs(ctx, id, "idle")
	t.Logf("camera frozen mid-stream: tunnel closed 1000 (idle) %s later", ended.Round(time.Millisecond))

	// Accepts and never answers.
	s2, id2, _ := c.open(ctx, 555, "")
	player, err := net.Dial("tcp", s2.ListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer player.Close()
	fmt.Fprintf(player, "OPTIONS rtsp://camera/stream RTSP/1.0\r\nCSeq: 1\r\n\r\n")
	asked := time.Now()
	select {
	case <-s2.Closed():
	case <-time.After(idleWait):
		t.Fatalf("the tunnel to a mute camera is still open %s after the request (idle timeout %s)", idleWait, idle)
	}
	if code, _ := s2.CloseStatus(); code != websocket.StatusNormalClosure {
		t.Errorf("mute camera: websocket close %d, want 1000", code)
	}
	c.waitClosedAs(ctx, id2, "idle")
	player.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := player.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Errorf("the player of a mute camera read %d bytes, %v; want the connection closed", n, err)
	}
	t.Logf("mute camera: tunnel closed 1000 (idle) %s after the player's request", time.Since(asked).Round(time.Millisecond))
	testutil.WaitUntil(t, ctx, "the mute camera's connection closed", func() bool { return mute.active.Load() == 0 })

	// The camera answers again.
	px.Thaw()
	s3, _, _ := c.open(ctx, 554, "")
	mustPlay(t, ctx, rtspURL(s3), "after the camera thawed")
}

// TestCloudVanishes cuts the network between the module and the cloud
// without closing anything (a frozen TCP proxy): the module's pings (every
// 1 s, 2 s timeout here) find the dead peer, the tunnel ends as dead_peer
// and the camera connection is freed.
func TestCloudVanishes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const interval, timeout = time.Second, 2 * time.Second
	c := newChain(t, ctx, chainOptions{env: []string{
		"RTSPTUNNEL_PINGINTERVAL=" + interval.String(), "RTSPTUNNEL_PINGTIMEOUT=" + timeout.String(),
	}})
	px, err := harness.NewFaultProxy(c.cloud.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)

	s, id, _ := c.open(ctx, 554, "wss://"+px.Addr())
	go harness.FFProbe(ctx, rtspURL(s), 60*time.Second)
	testutil.WaitUntil(t, ctx, "video flowing", func() bool { return c.cam.Plays() == 1 })
	time.Sleep(time.Second)
	if n := c.cam.ActiveConns(); n != 1 {
		t.Fatalf("camera has %d connections, want the tunnel's one", n)
	}

	cut := time.Now()
	px.Freeze()
	testutil.WaitUntil(t, ctx, "the camera connection freed", func() bool { return c.cam.ActiveConns() == 0 })
	detected := time.Since(cut)
	// A ping in flight and its timeout: 3 s, plus faultSlack (10 s) for a
	// loaded machine under -race, where the old 3 s of slack could run out.
	// Still below every slow path: without pings nothing notices a frozen
	// link (the wait above fails); with the module's defaults (15 s/10 s)
	// it takes 25 s, and with the interval alone ignored 17 s; the timeout
	// actually applied is checked in lastError, by outcome.
	if bound := interval + timeout + faultSlack; detected > bound {
		t.Errorf("dead peer detected after %s, want within %s", detected, bound)
	}
	sess := c.waitClosedAs(ctx, id, "dead_peer")
	if le, _ := sess["lastError"].(string); !strings.Contains(le, "no pong within "+timeout.String()) {
		t.Errorf("lastError %q, want the configured ping timeout: no pong within %s", le, timeout)
	}
	t.Logf("network cut: dead peer detected and camera freed %s later (pings %s/%s); lastError %v",
		detected.Round(time.Millisecond), interval, timeout, sess["lastError"])
	waitLog(t, ctx, c.module, "session closed", func(m map[string]any) bool {
		return m["session"] == id && m["outcome"] == "dead_peer"
	})
}

// TestStalledReaders runs tunnels whose readers stall or crawl, on both sides,
// against cameras and players that push as fast as they can: the module's
// memory stays bounded (RSS sampled from /proc) and a normal tunnel next to
// them keeps its full frame rate.
func TestStalledReaders(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{noStart: true})
	hose := newTCPServer(t, firehose)
	mute := newTCPServer(t, sink)
	// No pings: keep the stalled tunnels stalled for the whole measurement.
	c.startModule(ctx, `RTSPTUNNEL_TARGETS={"554":"`+c.cam.ListenAddr()+`","5542":"`+hose.addr()+`","5543":"`+mute.addr()+`"}`,
		"RTSPTUNNEL_PINGINTERVAL=0", "RTSPTUNNEL_IDLETIMEOUT=0")
	before := readProc(t, c.module.Pid())

	dial := func(s *testcloud.Session) net.Conn {
		p, err := net.Dial("tcp", s.ListenAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	// Firehose camera, player that never reads.
	sStall, _, _ := c.open(ctx, 5542, "")
	dial(sStall)
	// Firehose camera, player that reads 16 KiB every 10 ms.
	sSlow, _, _ := c.open(ctx, 5542, "")
	slow := dial(sSlow)
	var slowRead atomic.Int64
	go func() {
		buf := make([]byte, 16<<10)
		for ctx.Err() == nil {
			n, err := slow.Read(buf)
			slowRead.Add(int64(n))
			if err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	// Camera that never reads, player that writes as fast as it can.
	sMute, _, _ := c.open(ctx, 5543, "")
	pusher := dial(sMute)
	var pushed atomic.Int64
	go func() {
		buf := make([]byte, 32<<10)
		for ctx.Err() == nil {
			pusher.SetWriteDeadline(time.Now().Add(time.Second))
			n, err := pusher.Write(buf)
			pushed.Add(int64(n))
			if err != nil && !isTimeout(err) {
				return
			}
		}
	}()
	// A normal tunnel beside them.
	sOK, _ := c.openTunnel(ctx, token)
	const watch = 8 * time.Second
	player := harness.StartFFProbe(ctx, rtspURL(sOK), watch)

	time.Sleep(2 * time.Second)
	early := readProc(t, c.module.Pid())
	slow0, pushed0 := slowRead.Load(), pushed.Load()
	probe, probeErr := player.Wait()
	late := readProc(t, c.module.Pid())
	slowRate := float64(slowRead.Load()-slow0) / (watch - 2*time.Second).Seconds()
	t.Logf("module RSS: %d MiB before, %d MiB 2 s into the stall, %d MiB %s later; fds %d/%d/%d",
		before.rssKB>>10, early.rssKB>>10, late.rssKB>>10, watch-2*time.Second, before.fds, early.fds, late.fds)
	t.Logf("slow reader got %.1f MB/s; the pushing player got %d KiB into the path to the mute camera (%d KiB after the first 2 s): socket buffers",
		slowRate/1e6, pushed.Load()>>10, (pushed.Load()-pushed0)>>10)
	if growth := late.rssKB - early.rssKB; growth > 32<<10 {
		t.Errorf("module RSS grew by %d MiB while the readers stalled, want bounded", growth>>10)
	}
	if late.rssKB-before.rssKB > 128<<10 {
		t.Errorf("module RSS grew by %d MiB with three stalled tunnels", (late.rssKB-before.rssKB)>>10)
	}
	if pushed.Load()-pushed0 > 16<<20 {
		t.Errorf("%d MiB went into the path to a camera that reads nothing, want socket buffers only", (pushed.Load()-pushed0)>>20)
	}
	if slowRate <= 0 {
		t.Error("the slow reader starved")
	}
	want := int(watch.Seconds()*25) * 9 / 10
	if probeErr != nil || probe.Packets < want {
		t.Errorf("the tunnel beside the stalled ones: %d packets, %v; want >= %d", probe.Packets, probeErr, want)
	}
}

// TestShutdownManySessions sends SIGTERM with five tunnels carrying video:
// every one is closed with 1001, the camera connections are freed, the final
// state says so and the module exits 0 with every shutdown step done in time
// (see stopModule).
func TestShutdownManySessions(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newChain(t, ctx, chainOptions{})
	const n = 5
	var sessions []*testcloud.Session
	var ids []string
	for range n {
		s, id, _ := c.open(ctx, 554, "")
		sessions = append(sessions, s)
		ids = append(ids, id)
		go harness.FFProbe(ctx, rtspURL(s), 60*time.Second)
	}
	testutil.WaitUntil(t, ctx, "five players playing", func() bool { return c.cam.Plays() == n })
	c.waitReported(ctx, "five active sessions", func(rep map[string]any) bool {
		sum, _ := rep["summary"].(map[string]any)
		return sum["active"] == float64(n)
	})

	took := c.stopModule()
	for i, s := range sessions {
		<-s.Closed()
		if code, _ := s.CloseStatus(); code != websocket.StatusGoingAway {
			t.Errorf("tunnel %d: close code %d, want 1001", i, code)
		}
	}
	testutil.WaitUntil(t, ctx, "camera connections freed", func() bool { return c.cam.ActiveConns() == 0 })
	rep := c.reported()
	if sum, _ := rep["summary"].(map[string]any); sum["active"] != float64(0) {
		t.Errorf("final summary %v, want active 0", sum)
	}
	for _, id := range ids {
		if s := reportedSession(rep, id); s == nil || s["closeReason"] != "shutdown" {
			t.Errorf("final state of session %s: %v, want closed (shutdown)", id, s)
		}
	}
	if lines := logLines(c.module, "session closed"); len(lines) != n {
		t.Errorf("%d 'session closed' log lines, want %d", len(lines), n)
	}
	t.Logf("%d tunnels: exited %s after SIGTERM", n, took.Round(time.Millisecond))
}

// TestOpenCloseCycles opens and closes tunnels through the real binary, eight
// at a time, and compares the module's open file descriptors and goroutines
// (go_goroutines) before and after: nothing may leak. (10,000 cycles run
// in-process against the session manager: see TestManyCycles in
// modules/rtsptunnel/internal/session.)
func TestOpenCloseCycles(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cycles := 1000
	if testing.Short() {
		cycles = 200
	}
	c := newChain(t, ctx, chainOptions{noStart: true})
	// A camera that keeps the connection until the module closes it; cheaper
	// than RTSP for thousands of cycles.
	cam := newTCPServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	c.startModule(ctx, `RTSPTUNNEL_TARGETS={"554":"`+cam.addr()+`"}`, "RTSPTUNNEL_LOGLEVEL=warn", "RTSPTUNNEL_SESSIONRETENTION=0s")

	cycle := func() error {
		s, err := c.cloud.NewSession(token)
		if err != nil {
			return err
		}
		status, body, err := c.emu.InvokeMethod(ctx, edgeDevice, moduleID, "tunnelOpen",
			json.RawMessage(mustJSON(openPayload{s.URL(), token, 554})), 30*time.Second)
		if err != nil || status != 200 {
			s.Close(websocket.StatusNormalClosure, "")
			return fmt.Errorf("tunnelOpen: %d %s %v", status, body, err)
		}
		s.Close(websocket.StatusNormalClosure, "done")
		return nil
	}
	run := func(n int) time.Duration {
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		var failed atomic.Int64
		for range 8 {
			wg.Go(func() {
				for next.Add(1) <= int64(n) && ctx.Err() == nil {
					if err := cycle(); err != nil {
						if failed.Add(1) <= 3 {
							t.Errorf("cycle: %v", err)
						}
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	settle := func() (procStats, float64) {
		testutil.WaitUntil(t, ctx, "every tunnel closed", func() bool {
			return cam.active.Load() == 0 && metricValue(c.scrape(ctx), "rtsptunnel_sessions_active") == 0
		})
		// Connections in TIME_WAIT hold no descriptor, but closing ones may
		// take a moment to be reaped: sample until two readings agree.
		var st procStats
		var g float64
		for range 50 {
			a := readProc(t, c.module.Pid())
			ga := metricValue(c.scrape(ctx), "go_goroutines")
			time.Sleep(100 * time.Millisecond)
			st = readProc(t, c.module.Pid())
			g = metricValue(c.scrape(ctx), "go_goroutines")
			if a.fds == st.fds && ga == g {
				break
			}
		}
		return st, g
	}

	run(50) // warm up: pools, the metrics connection, the first TLS sessions
	base, baseG := settle()
	took := run(cycles)
	after, afterG := settle()
	t.Logf("%d open/close cycles in %s (%.0f/s); fds %d -> %d, goroutines %.0f -> %.0f, RSS %d -> %d MiB",
		cycles, took.Round(time.Millisecond), float64(cycles)/took.Seconds(), base.fds, after.fds, baseG, afterG, base.rssKB>>10, after.rssKB>>10)
	if after.fds > base.fds+3 {
		t.Errorf("open file descriptors %d -> %d after %d cycles", base.fds, after.fds, cycles)
	}
	if afterG > baseG+5 {
		t.Errorf("goroutines %.0f -> %.0f after %d cycles", baseG, afterG, cycles)
	}
	rep := c.waitReported(ctx, "every cycle counted", func(rep map[string]any) bool {
		sum, _ := rep["summary"].(map[string]any)
		return sum["opened"] == float64(cycles+50)
	})
	if sum := rep["summary"].(map[string]any); sum["failed"] != float64(0) || sum["active"] != float64(0) {
		t.Errorf("summary %v, want none failed or active", sum)
	}
}

// invokeAsRelay calls tunnelOpen as the relay does (relay/internal/core,
// open): IoT Hub's 404103 (not connected or not subscribed to methods, as
// while the module renews its token: the module never saw the call) is
// retried with a short backoff within the call's 10 s; any other answer,
// 504 included, is final. Each retry is counted in retries.
func (c *chain) invokeAsRelay(ctx context.Context, payload json.RawMessage, retries *atomic.Int64) (int, json.RawMessage, error) {
	until := time.Now().Add(10 * time.Second)
	wait := 50 * time.Millisecond
	for {
		status, resp, err := c.emu.InvokeMethod(ctx, edgeDevice, moduleID, "tunnelOpen", payload, time.Until(until))
		if he, ok := err.(*emulator.HubError); !ok || he.Code != emulator.CodeDeviceNotOnline || time.Now().Add(wait).After(until) {
			return status, resp, err
		}
		retries.Add(1)
		time.Sleep(wait)
		wait = min(2*wait, 500*time.Millisecond)
	}
}
