package report

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/session"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

// previousOf returns a Previous that reads the twin's document as it is
// when Run starts, as the app's GetTwin does.
func previousOf(tw *twin) func(context.Context) (json.RawMessage, error) {
	return func(context.Context) (json.RawMessage, error) {
		doc, _ := tw.snapshot()
		return json.Marshal(doc)
	}
}

// TestReconcile: sessions an earlier run left open are reported closed with
// module_restarted next to this run's sessions, keeping what was known of
// them, and leave the twin after OrphanRetention; sessions it had closed
// go with the start's reset.
func TestReconcile(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	src := newSource(session.Snapshot{Sessions: []session.Info{openInfo("a", 5)}, Summary: session.Summary{Active: 1, Opened: 1}})
	tw := newTwin()
	tw.doc["sessions"] = map[string]any{
		"dead": map[string]any{"state": "open", "remoteHost": "relay.example.com", "localPort": 554, "target": "192.168.10.21:554",
			"opened": "2026-01-02T15:04:05Z", "bytesToRemote": 1234, "bytesToCamera": 56, "unknown": "dropped"},
		"done":    map[string]any{"state": "closed", "closeReason": "idle"},
		"garbage": "not an object",
	}
	startRun(t, &Reporter{Publisher: tw, Source: src, Previous: previousOf(tw), OrphanRetention: 300 * time.Millisecond})

	doc := tw.waitDoc(t, ctx, "the reconciled session", func(d map[string]any) bool { return len(sessionsOf(d)) == 2 })
	sessions := sessionsOf(doc)
	if got := slices.Sorted(maps.Keys(sessions)); !slices.Equal(got, []string{"a", "dead"}) {
		t.Fatalf("sessions %v, want a (live) and dead (reconciled)", got)
	}
	dead := sessions["dead"].(map[string]any)
	closed, _ := time.Parse(time.RFC3339, dead["closed"].(string))
	delete(dead, "closed")
	want := map[string]any{"state": "closed", "closeReason": ReasonModuleRestarted, "closeCode": float64(-1), "lastError": orphanError,
		"remoteHost": "relay.example.com", "localPort": float64(554), "target": "192.168.10.21:554",
		"opened": "2026-01-02T15:04:05Z", "bytesToRemote": float64(1234), "bytesToCamera": float64(56)}
	if gb, wb := mustJSON(dead), mustJSON(want); string(gb) != string(wb) {
		t.Errorf("reconciled session\n%s\nwant\n%s", gb, wb)
	}
	if time.Since(closed) > time.Hour || closed.Before(time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)) {
		t.Errorf("closed %v, want the reconcile time", closed)
	}
	if sessions["a"].(map[string]any)["state"] != "open" {
		t.Errorf("live session %v", sessions["a"])
	}

	doc = tw.waitDoc(t, ctx, "the reconciled session gone after its retention", func(d map[string]any) bool {
		_, there := sessionsOf(d)["dead"]
		return !there
	})
	if _, ok := sessionsOf(doc)["a"]; !ok {
		t.Errorf("the live session went with the reconciled one: %v", doc)
	}
}

// TestReconcileCases: what counts as left open, and what a failure to read
// the earlier state does (nothing is reconciled; publishing goes on).
func TestReconcileCases(t *testing.T) {
	for _, tc := range []struct {
		name     string
		previous func(context.Context) (json.RawMessage, error)
		want     []string // session ids in the twin once published
	}{
		{"none reported", func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{}`), nil }, []string{"a"}},
		{"empty twin", func(context.Context) (json.RawMessage, error) { return nil, nil }, []string{"a"}},
		{"two open", func(context.Context) (json.RawMessage, error) {
			return json.RawMessage(`{"sessions":{"x":{"state":"open"},"y":{"state":"open"},"z":{"state":"closed"}},"$version":7}`), nil
		}, []string{"a", "x", "y"}},
		{"same id as a live session", func(context.Context) (json.RawMessage, error) {
			return json.RawMessage(`{"sessions":{"a":{"state":"open"}}}`), nil
		}, []string{"a"}},
		{"GET fails", func(context.Context) (json.RawMessage, error) { return nil, errors.New("hub: not connected") }, []string{"a"}},
		{"not JSON", func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{`), nil }, []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testutil.Context(t, 10*time.Second)
			src := newSource(session.Snapshot{Sessions: []session.Info{openInfo("a", 5)}, Summary: session.Summary{Active: 1, Opened: 1}})
			tw := newTwin()
			startRun(t, &Reporter{Publisher: tw, Source: src, Previous: tc.previous})
			doc := tw.waitDoc(t, ctx, "the first state", func(d map[string]any) bool { _, ok := d["summary"]; return ok })
			if got := slices.Sorted(maps.Keys(sessionsOf(doc))); !slices.Equal(got, tc.want) {
				t.Errorf("sessions %v, want %v", got, tc.want)
			}
			if a := sessionsOf(doc)["a"].(map[string]any); a["state"] != "open" {
				t.Errorf("live session a reported %v", a)
			}
		})
	}
}

// TestReconcileSizeLimit: reconciled sessions never push the reported
// sessions past MaxBytes.
func TestReconcileSizeLimit(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	var b strings.Builder
	b.WriteString(`{"sessions":{`)
	for i := range 200 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"` + strings.Repeat("x", 30) + string(rune('A'+i%26)) + string(rune('a'+i/26)) + `":{"state":"open","target":"192.168.10.21:554"}`)
	}
	b.WriteString(`}}`)
	src := newSource(session.Snapshot{Sessions: []session.Info{openInfo("a", 5)}, Summary: session.Summary{Active: 1}})
	tw := newTwin()
	const maxBytes = 4 << 10
	startRun(t, &Reporter{Publisher: tw, Source: src, MaxBytes: maxBytes,
		Previous: func(context.Context) (json.RawMessage, error) { return json.RawMessage(b.String()), nil }})
	doc := tw.waitDoc(t, ctx, "the first state", func(d map[string]any) bool { _, ok := d["summary"]; return ok })
	n := len(sessionsOf(doc))
	size := len(mustJSON(map[string]any{"sessions": doc["sessions"], "summary": doc["summary"]}))
	if size > maxBytes || n < 2 || n > 200 {
		t.Errorf("%d sessions in %d bytes, want some reconciled ones within %d bytes", n, size, maxBytes)
	}
	if _, ok := sessionsOf(doc)["a"]; !ok {
		t.Error("the live session was crowded out by reconciled ones")
	}
}
