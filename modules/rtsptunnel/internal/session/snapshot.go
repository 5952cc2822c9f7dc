package session

import (
	"cmp"
	"slices"
	"time"
)

// State is a session's state in a Snapshot.
type State string

// Session states.
const (
	StateOpen   State = "open"
	StateClosed State = "closed"
)

// Info describes one session. It never contains the token or the endpoint's
// query string.
type Info struct {
	ID            string
	State         State
	RemoteHost    string // host[:port] of remoteEndpoint
	LocalPort     int
	Target        string // camera host:port
	Opened        time.Time
	Closed        time.Time // zero while open
	BytesToRemote int64
	BytesToCamera int64
	CloseReason   string // a tunnel.Reason; empty while open
	CloseCode     int    // websocket close code (see tunnel.Result); 0 while open
	LastError     string // empty unless the tunnel failed
}

// Summary counts sessions since the Manager started.
type Summary struct {
	Active      int    // tunnels open now
	Opened      uint64 // successful tunnelOpen calls
	Failed      uint64 // failed tunnelOpen calls
	LastError   string // the last failed call or failed tunnel; token-free
	LastErrorAt time.Time
}

// Snapshot is the Manager's state at one moment.
type Snapshot struct {
	// Sessions lists open sessions (oldest first), then closed sessions still
	// within retention (most recently closed first).
	Sessions []Info
	Summary  Summary
}

// Snapshot returns the live and recently closed sessions and the summary.
// Byte counts of open sessions are read at the moment of the call. Safe for
// concurrent use.
func (m *Manager) Snapshot() Snapshot {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked(now)
	snap := Snapshot{
		Sessions: make([]Info, 0, len(m.live)+len(m.closed)),
		Summary: Summary{
			Active:      len(m.live),
			Opened:      m.opened,
			Failed:      m.failed,
			LastError:   m.lastError,
			LastErrorAt: m.lastErrorAt,
		},
	}
	for _, s := range m.live {
		snap.Sessions = append(snap.Sessions, s.info())
	}
	slices.SortFunc(snap.Sessions, func(a, b Info) int {
		if c := a.Opened.Compare(b.Opened); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	for _, s := range slices.Backward(m.closed) {
		snap.Sessions = append(snap.Sessions, s.info())
	}
	return snap
}

// info describes s; caller holds Manager.mu.
func (s *session) info() Info {
	i := Info{
		ID:            s.id,
		State:         StateOpen,
		RemoteHost:    s.remoteHost,
		LocalPort:     s.localPort,
		Target:        s.target,
		Opened:        s.opened,
		BytesToRemote: s.stats.ToRemote(),
		BytesToCamera: s.stats.ToCamera(),
	}
	if !s.closedAt.IsZero() {
		i.State = StateClosed
		i.Closed = s.closedAt
		i.CloseReason = string(s.result.Reason)
		i.CloseCode = int(s.result.CloseCode)
		i.LastError = s.lastError
	}
	return i
}
