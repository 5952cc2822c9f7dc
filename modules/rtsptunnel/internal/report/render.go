package report

import (
	"encoding/json"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/session"
)

// render turns a snapshot into the session objects by id and the summary
// object, keeping the JSON of both within maxBytes.
func render(snap session.Snapshot, maxBytes int) (map[string]object, object) {
	// The summary's size barely depends on what is omitted; reserve room for
	// the largest count first.
	budget := maxBytes - objectSize(summaryObject(snap.Summary, len(snap.Sessions))) - len(`{"sessions":{},"summary":}`)
	sessions := make(map[string]object, len(snap.Sessions))
	omitted := 0
	// snap.Sessions lists open sessions oldest first, then closed ones newest
	// first: what does not fit is the newest open and the oldest closed.
	for _, info := range snap.Sessions {
		obj := sessionObject(info)
		size := len(`"":,`) + len(info.ID) + objectSize(obj)
		if size > budget {
			omitted++
			continue
		}
		budget -= size
		sessions[info.ID] = obj
	}
	return sessions, summaryObject(snap.Summary, omitted)
}

// sessionObject is one session's reported object. Fields that do not apply
// are left out: they only ever appear during a session's life, so a merge
// patch never needs to remove one.
func sessionObject(i session.Info) object {
	o := object{
		"state":         mustJSON(i.State),
		"remoteHost":    mustJSON(i.RemoteHost),
		"localPort":     mustJSON(i.LocalPort),
		"target":        mustJSON(i.Target),
		"opened":        timeJSON(i.Opened),
		"bytesToRemote": mustJSON(i.BytesToRemote),
		"bytesToCamera": mustJSON(i.BytesToCamera),
	}
	if !i.Closed.IsZero() {
		o["closed"] = timeJSON(i.Closed)
		o["closeReason"] = mustJSON(i.CloseReason)
		o["closeCode"] = mustJSON(i.CloseCode)
	}
	if i.LastError != "" {
		o["lastError"] = mustJSON(i.LastError)
	}
	return o
}

// summaryObject always has every field (null when empty), so that a patch
// can clear one.
func summaryObject(s session.Summary, omitted int) object {
	o := object{
		"active":        mustJSON(s.Active),
		"opened":        mustJSON(s.Opened),
		"failed":        mustJSON(s.Failed),
		"lastError":     null,
		"lastErrorTime": null,
		"truncated":     mustJSON(omitted > 0),
		"omitted":       mustJSON(omitted),
	}
	if s.LastError != "" {
		o["lastError"] = mustJSON(s.LastError)
		o["lastErrorTime"] = timeJSON(s.LastErrorAt)
	}
	return o
}

// objectSize is the length of o's JSON encoding.
func objectSize(o object) int {
	n := 2 // {}
	for k, v := range o {
		n += len(k) + len(v) + len(`"":,`)
	}
	return n
}

func timeJSON(t time.Time) json.RawMessage {
	return mustJSON(t.UTC().Format(time.RFC3339))
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain values are marshalled here
	}
	return b
}
