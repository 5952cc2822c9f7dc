package report

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// ReasonModuleRestarted is the closeReason of a session that a previous run
// of the module reported open and that no process carries any more: that
// process ended without closing it (SIGKILL, a crash, the power). The next
// run reports it closed with this reason at start; it is never a reason of
// a session this process ran, so it is not a metric label value.
const ReasonModuleRestarted = "module_restarted"

// orphanError is the lastError of a reconciled session.
const orphanError = "the module restarted: the process that ran this session ended without closing it"

// orphanFields are the fields a reconciled session keeps from what the
// previous run reported; the rest of a stored object is not trusted.
var orphanFields = []string{"remoteHost", "localPort", "target", "opened", "bytesToRemote", "bytesToCamera"}

// orphans returns the sessions that reported lists as open, each as the
// object that reports it closed at now with ReasonModuleRestarted. The byte
// counts are the last ones reported (refreshed every StatsInterval).
func orphans(reported json.RawMessage, now time.Time) (map[string]object, error) {
	var doc struct {
		Sessions map[string]json.RawMessage `json:"sessions"`
	}
	if len(reported) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(reported, &doc); err != nil {
		return nil, fmt.Errorf("failed to read the reported sessions: %w", err)
	}
	out := map[string]object{}
	for id, raw := range doc.Sessions {
		// Whatever else an entry holds (a hand-edited twin, another
		// version's fields) is skipped, not fatal.
		var fields map[string]json.RawMessage
		var state string
		if json.Unmarshal(raw, &fields) != nil || json.Unmarshal(fields["state"], &state) != nil || state != "open" {
			continue
		}
		o := object{}
		for _, k := range orphanFields {
			if v, ok := fields[k]; ok {
				o[k] = v
			}
		}
		o["state"] = mustJSON("closed")
		o["closed"] = timeJSON(now)
		o["closeReason"] = mustJSON(ReasonModuleRestarted)
		o["closeCode"] = mustJSON(-1) // no close frame: nobody was left to send one
		o["lastError"] = mustJSON(orphanError)
		out[id] = o
	}
	return out, nil
}

// withOrphans adds the orphans to sessions (a live session with the same id
// wins) as long as sessions and summary stay within maxBytes, oldest id
// order for a stable choice. It returns sessions.
func withOrphans(sessions map[string]object, summary object, orphans map[string]object, maxBytes int) map[string]object {
	if len(orphans) == 0 {
		return sessions
	}
	size := objectSize(summary) + len(`{"sessions":{},"summary":}`)
	for id, o := range sessions {
		size += len(`"":,`) + len(id) + objectSize(o)
	}
	for _, id := range slices.Sorted(maps.Keys(orphans)) {
		if _, live := sessions[id]; live {
			continue
		}
		o := orphans[id]
		n := len(`"":,`) + len(id) + objectSize(o)
		if size+n > maxBytes {
			continue
		}
		size += n
		sessions[id] = o
	}
	return sessions
}

// reconcile reads what an earlier run reported (Previous) and keeps its
// open sessions as orphans, to be reported closed. It returns a channel
// that fires when they are to leave the twin, or nil when there are none.
func (r *Reporter) reconcile(ctx context.Context) <-chan time.Time {
	if r.Previous == nil {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, r.PublishTimeout)
	reported, err := r.Previous(pctx)
	cancel()
	if err != nil {
		r.Logger.Warn("failed to read the sessions an earlier run reported; any it left open will vanish unreconciled", "error", err)
		return nil
	}
	now := time.Now()
	found, err := orphans(reported, now)
	if err != nil {
		r.Logger.Warn("failed to reconcile the sessions an earlier run reported", "error", err)
		return nil
	}
	if len(found) == 0 {
		return nil
	}
	r.pubMu.Lock()
	r.orphans, r.orphansUntil = found, now.Add(r.OrphanRetention)
	r.pubMu.Unlock()
	r.Logger.Info("sessions left open by an earlier run reported closed", "count", len(found),
		"sessions", slices.Sorted(maps.Keys(found)), "close_reason", ReasonModuleRestarted)
	return time.After(r.OrphanRetention)
}
