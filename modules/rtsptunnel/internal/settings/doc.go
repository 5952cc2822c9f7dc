// Package settings is the single source of truth for the module's configuration.
//
// Every setting is one field of [Settings] with one `setting` tag: the tag is the
// desired-property name in the module twin (camelCase) and the environment variable
// name is derived from it as "RTSPTUNNEL_" + upper case (maxSessions →
// RTSPTUNNEL_MAXSESSIONS). Defaults live in [Defaults] only; descriptions, limits
// and allowed values live in the field's tags. [Fields] lists everything for
// --help, the README and the deployment templates, so there is one list, not two.
//
// # Load order
//
// At start: [Defaults] → environment ([FromEnv]) → validation. At run time: module
// twin desired properties ([Settings.Apply]), one key at a time, each acknowledged
// with the IoT Plug and Play writable-property convention ([Ack]). A desired
// property set to null (or deleted) returns that setting to its start-up value
// (default, overridden by the environment). Settings tagged "envonly" (log format,
// hub transport, hub port, token lifetime) cannot be changed through the twin: they
// are answered with ac 400.
//
// # Value syntax
//
// The same text means the same thing in the environment and in the twin:
//
//   - Durations: a Go duration string ("30s", "1m30s", "250ms") or a number of
//     seconds (30, 0.5). In JSON either a string or a number; in the environment
//     a bare number is seconds. Negative durations are rejected; 0 means "off"
//     where the setting says so.
//   - Integers and booleans: JSON literals (100, true, false) in both places.
//   - Lists: a JSON array, or in the environment also a comma-separated list
//     ("554,8554" or "cam.example.com,*.relay.example.com").
//   - targets: a JSON object {"554":"192.168.10.21:554"}, or in the environment
//     also "554=192.168.10.21:554,5541=192.168.10.22:554".
//   - Strings: the raw text in the environment, a JSON string in the twin.
//
// An environment variable that is set but empty counts as unset, except for a
// string setting that accepts "" (RTSPTUNNEL_METRICSADDR= disables the metrics
// server). Decoding is
// strict: unknown twin keys, wrong JSON types (554.5, "554" for an integer) and
// out-of-range values are errors whose message quotes the setting's name and says
// what is accepted.
//
// # Concurrency
//
// A Settings value is immutable by convention: its map and slices may be shared
// between copies returned by Apply, so never modify them in place. Values are
// safe to read from any goroutine.
package settings
