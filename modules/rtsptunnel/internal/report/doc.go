// Package report turns session snapshots into module twin reported-property
// patches.
//
// # Reported document
//
// The module owns two reported properties, updated with JSON merge patches
// (a null deletes a key):
//
//	"sessions": {
//	  "<sessionId>": {"state":"open"|"closed", "remoteHost":"relay.example.com",
//	                  "localPort":554, "target":"192.168.10.21:554",
//	                  "opened":"2026-01-02T15:04:05Z", "closed":"...",
//	                  "bytesToRemote":123, "bytesToCamera":45,
//	                  "closeReason":"camera_closed", "closeCode":1000, "lastError":"..."},
//	  ...
//	},
//	"summary": {"active":1, "opened":10, "failed":2, "lastError":"...",
//	            "lastErrorTime":"...", "truncated":false, "omitted":0}
//
// Open sessions are listed, and closed ones until the session retention ends
// (then their key is set to null). Only changed fields are sent. Byte counts are
// refreshed every StatsInterval while sessions are open, and with any other
// change. The token and the endpoint's query string are never part of a
// snapshot, so they cannot reach the twin.
//
// # Limits
//
// IoT Hub limits all reported properties together to 32 KB. The sessions and
// summary stay within MaxBytes (default 24 KiB, leaving room for setting acks):
// when they would not, the oldest-closed sessions and then the newest open
// ones are left out and the summary says so ("truncated":true, "omitted":n).
// At most one patch is sent per Interval (default 1s), except right after a
// reset (start or Republish), which takes two: {"sessions":null} to drop
// whatever an earlier run or a lost patch left behind, then the full state.
//
// # Restarts
//
// A module that was killed (SIGKILL, a crash, the power) leaves its sessions
// listed as open. When [Reporter.Previous] is set, Run reads what the earlier
// run reported before its first patch and reports each session left open as
// closed with closeReason "module_restarted" (closeCode -1, the last byte
// counts it reported, a lastError that says so) for OrphanRetention, next to
// the new run's own sessions and within MaxBytes; then they are removed. The
// summary counts only the new run's sessions.
//
// # Ordering
//
// Every patch, including writable-property acknowledgements queued with
// [Reporter.Ack], goes through one Publisher call at a time, in order.
package report
