package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/session"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeSource is a Source whose snapshot the test sets.
type fakeSource struct {
	mu      sync.Mutex
	snap    session.Snapshot
	changed chan struct{}
}

func newSource(snap session.Snapshot) *fakeSource {
	return &fakeSource{snap: snap, changed: make(chan struct{}, 1)}
}

func (f *fakeSource) Snapshot() session.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.snap
	s.Sessions = append([]session.Info(nil), s.Sessions...)
	return s
}

func (f *fakeSource) Changed() <-chan struct{} { return f.changed }

// set replaces the snapshot; notify says whether to signal the change.
func (f *fakeSource) set(snap session.Snapshot, notify bool) {
	f.mu.Lock()
	f.snap = snap
	f.mu.Unlock()
	if notify {
		select {
		case f.changed <- struct{}{}:
		default:
		}
	}
}

// twin is a Publisher that applies patches with JSON merge-patch semantics to
// an in-memory reported document, like IoT Hub.
type twin struct {
	mu      sync.Mutex
	doc     map[string]any
	patches []string
	fail    func(n int) error // n counts calls from 0; nil never fails
	calls   int
	changed chan struct{}
}

func newTwin() *twin { return &twin{doc: map[string]any{}, changed: make(chan struct{}, 1000)} }

func (tw *twin) UpdateReported(ctx context.Context, patch json.RawMessage) error {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	n := tw.calls
	tw.calls++
	if tw.fail != nil {
		if err := tw.fail(n); err != nil {
			return err
		}
	}
	var p map[string]any
	if err := json.Unmarshal(patch, &p); err != nil {
		return fmt.Errorf("400: %w", err)
	}
	tw.patches = append(tw.patches, string(patch))
	mergePatch(tw.doc, p)
	tw.changed <- struct{}{}
	return nil
}

func mergePatch(doc, patch map[string]any) {
	for k, v := range patch {
		switch v := v.(type) {
		case nil:
			delete(doc, k)
		case map[string]any:
			sub, ok := doc[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
				doc[k] = sub
			}
			mergePatch(sub, v)
		default:
			doc[k] = v
		}
	}
}

func (tw *twin) snapshot() (doc map[string]any, patches []string) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	b, _ := json.Marshal(tw.doc)
	json.Unmarshal(b, &doc)
	return doc, append([]string(nil), tw.patches...)
}

// waitDoc waits until cond holds for the document.
func (tw *twin) waitDoc(t *testing.T, ctx context.Context, what string, cond func(doc map[string]any) bool) map[string]any {
	t.Helper()
	for {
		doc, _ := tw.snapshot()
		if cond(doc) {
			return doc
		}
		select {
		case <-tw.changed:
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s; document %v", what, doc)
		}
	}
}

func sessionsOf(doc map[string]any) map[string]any {
	s, _ := doc["sessions"].(map[string]any)
	return s
}

var t0 = time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)

func openInfo(id string, bytes int64) session.Info {
	return session.Info{ID: id, State: session.StateOpen, RemoteHost: "relay.example.com", LocalPort: 554,
		Target: "192.168.10.21:554", Opened: t0, BytesToRemote: bytes, BytesToCamera: 10}
}

func closedInfo(id string) session.Info {
	i := openInfo(id, 99)
	i.State, i.Closed, i.CloseReason, i.CloseCode, i.LastError = session.StateClosed, t0.Add(time.Minute), "dead_peer", -1, "no pong"
	return i
}

// startRun runs r until the test ends.
func startRun(t *testing.T, r *Reporter) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	})
}

func TestInitialStateAndShape(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	src := newSource(session.Snapshot{
		Sessions: []session.Info{openInfo("a", 5), closedInfo("b")},
		Summary:  session.Summary{Active: 1, Opened: 2, Failed: 3, LastError: "camera down", LastErrorAt: t0},
	})
	tw := newTwin()
	tw.doc["sessions"] = map[string]any{"stale-from-last-run": map[string]any{"state": "open"}}
	tw.doc["other"] = "kept"
	startRun(t, &Reporter{Publisher: tw, Source: src})
	doc := tw.waitDoc(t, ctx, "both sessions", func(d map[string]any) bool { return len(sessionsOf(d)) == 2 })
	_, patches := tw.snapshot()
	if patches[0] != `{"sessions":null}` {
		t.Errorf("first patch %s, want the reset", patches[0])
	}
	want := `{"other":"kept","sessions":{` +
		`"a":{"bytesToCamera":10,"bytesToRemote":5,"localPort":554,"opened":"2026-01-02T15:04:05Z","remoteHost":"relay.example.com","state":"open","target":"192.168.10.21:554"},` +
		`"b":{"bytesToCamera":10,"bytesToRemote":99,"closeCode":-1,"closeReason":"dead_peer","closed":"2026-01-02T15:05:05Z","lastError":"no pong","localPort":554,"opened":"2026-01-02T15:04:05Z","remoteHost":"relay.example.com","state":"closed","target":"192.168.10.21:554"}},` +
		`"summary":{"active":1,"failed":3,"lastError":"camera down","lastErrorTime":"2026-01-02T15:04:05Z","omitted":0,"opened":2,"truncated":false}}`
	if got, _ := json.Marshal(doc); string(got) != want {
		t.Errorf("document\n%s\nwant\n%s", got, want)
	}
}

// TestDiffs: only changed fields travel; removed sessions become null; an
// error clearing in the summary is sent as null.
func TestDiffs(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	src := newSource(session.Snapshot{Sessions: []session.Info{openInfo("a", 1), closedInfo("b")}, Summary: session.Summary{Active: 1, LastError: "x", LastErrorAt: t0}})
	tw := newTwin()
	startRun(t, &Reporter{Publisher: tw, Source: src, Interval: 10 * time.Millisecond})
	tw.waitDoc(t, ctx, "initial", func(d map[string]any) bool { return len(sessionsOf(d)) == 2 })

	src.set(session.Snapshot{Sessions: []session.Info{openInfo("a", 2)}, Summary: session.Summary{Active: 1}}, true)
	tw.waitDoc(t, ctx, "b removed", func(d map[string]any) bool { return len(sessionsOf(d)) == 1 })
	_, patches := tw.snapshot()
	last := patches[len(patches)-1]
	if want := `{"sessions":{"a":{"bytesToRemote":2},"b":null},"summary":{"lastError":null,"lastErrorTime":null}}`; last != want {
		t.Errorf("patch %s, want %s", last, want)
	}
	src.set(session.Snapshot{Sessions: []session.Info{openInfo("a", 2)}, Summary: session.Summary{Active: 1}}, true)
	time.Sleep(50 * time.Millisecond)
	if _, after := tw.snapshot(); len(after) != len(patches) {
		t.Errorf("an unchanged snapshot produced patch %s", after[len(after)-1])
	}
}

// TestCoalescing: a burst of changes yields at most one patch per Interval.
func TestCoalescing(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	src := newSource(session.Snapshot{})
	tw := newTwin()
	const interval = 200 * time.Millisecond
	startRun(t, &Reporter{Publisher: tw, Source: src, Interval: interval})
	tw.waitDoc(t, ctx, "initial", func(d map[string]any) bool { return d["summary"] != nil })
	_, before := tw.snapshot()
	start := time.Now()
	for i := range 50 {
		src.set(session.Snapshot{Summary: session.Summary{Opened: uint64(i + 1)}}, true)
		time.Sleep(6 * time.Millisecond)
	}
	elapsed := time.Since(start)
	tw.waitDoc(t, ctx, "last change", func(d map[string]any) bool {
		s, _ := d["summary"].(map[string]any)
		return s["opened"] == float64(50)
	})
	_, after := tw.snapshot()
	if n, limit := len(after)-len(before), int(elapsed/interval)+2; n > limit {
		t.Errorf("%d patches for 50 changes in %v, want at most %d", n, elapsed, limit)
	}
}

// TestStatsRefresh: byte counts change without a notification and are
// published on the stats interval.
func TestStatsRefresh(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	src := newSource(session.Snapshot{Sessions: []session.Info{openInfo("a", 1)}})
	tw := newTwin()
	startRun(t, &Reporter{Publisher: tw, Source: src, Interval: 10 * time.Millisecond, StatsInterval: 100 * time.Millisecond})
	tw.waitDoc(t, ctx, "initial", func(d map[string]any) bool { return len(sessionsOf(d)) == 1 })
	src.set(session.Snapshot{Sessions: []session.Info{openInfo("a", 12345)}}, false)
	tw.waitDoc(t, ctx, "refreshed bytes", func(d map[string]any) bool {
		a, _ := sessionsOf(d)["a"].(map[string]any)
		return a["bytesToRemote"] == float64(12345)
	})
}

// TestSizeLimit fills the snapshot with the most sessions the settings allow,
// each with maximal fields: the document stays within MaxBytes (and so within
// IoT Hub's 32 KB), and the summary says how many were left out.
func TestSizeLimit(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	maxSessions := 1000
	for _, f := range settings.Fields() {
		if f.Name == "maxSessions" && !strings.Contains(f.Accepts, "to 1000") {
			t.Fatalf("maxSessions accepts %s; update this test's maximum", f.Accepts)
		}
	}
	host := strings.Repeat("h", 63) + "." + strings.Repeat("o", 63) + "." + strings.Repeat("s", 63) + "." + strings.Repeat("t", 58) + ":65535"
	var snap session.Snapshot
	for i := range maxSessions {
		info := closedInfo(fmt.Sprintf("%08d-0000-4000-8000-000000000000", i))
		info.RemoteHost, info.Target = host, host
		info.BytesToRemote, info.BytesToCamera = 1<<62, 1<<62
		info.LastError = strings.Repeat("e", 259)
		if i < maxSessions/2 {
			info.State, info.Closed, info.CloseReason, info.LastError = session.StateOpen, time.Time{}, "", ""
		}
		snap.Sessions = append(snap.Sessions, info)
	}
	snap.Summary = session.Summary{Active: maxSessions / 2, Opened: 1 << 62, Failed: 1 << 62, LastError: strings.Repeat("e", 259), LastErrorAt: t0}
	src := newSource(snap)
	tw := newTwin()
	startRun(t, &Reporter{Publisher: tw, Source: src})
	doc := tw.waitDoc(t, ctx, "the document", func(d map[string]any) bool { return d["summary"] != nil })
	b, _ := json.Marshal(doc)
	if len(b) > DefaultMaxBytes || len(b) > 32<<10 {
		t.Errorf("document is %d bytes; limit %d", len(b), DefaultMaxBytes)
	}
	summary := doc["summary"].(map[string]any)
	n := len(sessionsOf(doc))
	if summary["truncated"] != true || summary["omitted"] != float64(maxSessions-n) || n == 0 {
		t.Errorf("summary %v with %d sessions listed", summary, n)
	}
	if _, ok := sessionsOf(doc)["00000000-0000-4000-8000-000000000000"]; !ok {
		t.Error("the oldest open session was left out")
	}
	t.Logf("%d of %d maximal sessions fit in %d bytes", n, maxSessions, len(b))

	// A realistic full house at the default limit fits without truncation.
	snap = session.Snapshot{Summary: session.Summary{Active: 100, Opened: 123456, Failed: 789, LastError: strings.Repeat("e", 200), LastErrorAt: t0}}
	for i := range 100 {
		info := openInfo(fmt.Sprintf("%08x-1b2c-4d3e-8f40-5a6b7c8d9e0f", i), 123456789012)
		info.RemoteHost, info.Target, info.BytesToCamera = "westeurope.rtsp-tunnel.example.net", "192.168.100.200:554", 12345678
		snap.Sessions = append(snap.Sessions, info)
	}
	src.set(snap, true)
	doc = tw.waitDoc(t, ctx, "100 sessions", func(d map[string]any) bool { return len(sessionsOf(d)) == 100 })
	b, _ = json.Marshal(doc)
	if len(b) > DefaultMaxBytes || doc["summary"].(map[string]any)["truncated"] != false {
		t.Errorf("100 realistic sessions: %d bytes, summary %v", len(b), doc["summary"])
	}
	t.Logf("100 realistic open sessions: %d bytes", len(b))
}

// TestRepublishAndFailures: a failed patch and a Republish both lead to a reset
// and a full rewrite; acks queued meanwhile are not lost.
func TestRepublishAndFailures(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	src := newSource(session.Snapshot{Sessions: []session.Info{openInfo("a", 1)}})
	tw := newTwin()
	r := &Reporter{Publisher: tw, Source: src, Interval: 10 * time.Millisecond}
	startRun(t, r)
	tw.waitDoc(t, ctx, "initial", func(d map[string]any) bool { return len(sessionsOf(d)) == 1 })

	// The hub goes away: the next patches fail.
	var failing sync.Mutex
	down := true
	tw.mu.Lock()
	tw.fail = func(int) error {
		failing.Lock()
		defer failing.Unlock()
		if down {
			return errors.New("not connected")
		}
		return nil
	}
	tw.mu.Unlock()
	r.Ack(map[string]settings.Ack{"maxSessions": {Value: json.RawMessage("5"), AC: 200, AV: 2, AD: "applied"}})
	src.set(session.Snapshot{Sessions: []session.Info{openInfo("b", 1)}}, true)
	time.Sleep(100 * time.Millisecond)
	r.Ack(map[string]settings.Ack{"idleTimeout": {Value: json.RawMessage(`"1m"`), AC: 200, AV: 3, AD: "applied"}})

	// Meanwhile the twin lost track: a stale session appears (as after a lost patch).
	tw.mu.Lock()
	sessionsOf(tw.doc)["stale"] = map[string]any{"state": "open"}
	tw.mu.Unlock()

	failing.Lock()
	down = false
	failing.Unlock()
	r.Republish()
	doc := tw.waitDoc(t, ctx, "recovery", func(d map[string]any) bool {
		s := sessionsOf(d)
		return len(s) == 1 && s["b"] != nil && d["maxSessions"] != nil && d["idleTimeout"] != nil
	})
	if ack, _ := doc["maxSessions"].(map[string]any); ack["ac"] != float64(200) || ack["av"] != float64(2) || ack["value"] != float64(5) {
		t.Errorf("ack = %v", ack)
	}
	_, patches := tw.snapshot()
	resets := 0
	for _, p := range patches {
		if p == `{"sessions":null}` {
			resets++
		}
	}
	if resets < 2 {
		t.Errorf("want a reset at start and after the failure, got patches %v", patches)
	}
}

// TestFlush publishes immediately, with or without Run.
func TestFlush(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	src := newSource(session.Snapshot{Sessions: []session.Info{openInfo("a", 1)}})
	tw := newTwin()
	r := &Reporter{Publisher: tw, Source: src, Interval: time.Hour}
	if err := r.Flush(ctx); err != nil { // without Run
		t.Fatal(err)
	}
	if doc, _ := tw.snapshot(); len(sessionsOf(doc)) != 1 {
		t.Fatalf("document %v", doc)
	}
	startRun(t, r)
	src.set(session.Snapshot{Sessions: []session.Info{closedInfo("a")}}, true)
	r.Ack(map[string]settings.Ack{"logLevel": {Value: json.RawMessage(`"debug"`), AC: 200, AV: 4}})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	doc, _ := tw.snapshot()
	if a, _ := sessionsOf(doc)["a"].(map[string]any); a["state"] != "closed" || doc["logLevel"] == nil {
		t.Errorf("after Flush: %v", doc)
	}
	tw.mu.Lock()
	tw.fail = func(int) error { return errors.New("offline") }
	tw.mu.Unlock()
	src.set(session.Snapshot{}, true)
	if err := r.Flush(ctx); err == nil {
		t.Error("Flush hid the publisher's error")
	}
}
