package settings

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// FromEnv returns Defaults overridden by the environment variables found through
// getenv (os.LookupEnv fits), validated. A variable set but empty counts as
// unset, unless the setting is a string that accepts "" (metricsAddr: empty
// disables the metrics server). On error it returns every problem
// joined (errors.As finds each *Error) together with the settings it could
// apply; the caller should refuse to start.
func FromEnv(getenv func(string) (string, bool)) (Settings, error) {
	s := Defaults()
	rv := reflect.ValueOf(&s).Elem()
	var errs []error
	for _, f := range fields {
		text, ok := getenv(f.env)
		if !ok {
			continue
		}
		v, err := f.decodeJSON(f.envToJSON(text))
		if text == "" && (f.kind != kindString || err != nil) {
			// Set but empty counts as unset, except for a string setting that
			// accepts "" as a value of its own: RTSPTUNNEL_METRICSADDR= disables
			// the metrics server, as its description says.
			continue
		}
		if err != nil {
			errs = append(errs, &Error{Setting: f.name, Source: "environment variable " + f.env, Value: shorten(text), Reason: err.Error()})
			continue
		}
		rv.Field(f.index).Set(v)
	}
	start := s
	s.start = &start
	return s, errors.Join(errs...)
}

// Validate checks every setting and returns all problems joined (nil when valid).
// FromEnv and Apply validate already; Validate is for settings built by hand.
func (s Settings) Validate() error {
	rv := reflect.ValueOf(s)
	var errs []error
	for _, f := range fields {
		if err := f.validate(rv.Field(f.index)); err != nil {
			errs = append(errs, &Error{Setting: f.name, Reason: err.Error()})
		}
	}
	return errors.Join(errs...)
}

// Ack is a writable-property acknowledgement in the IoT Plug and Play convention.
// It marshals to {"value":..,"ac":..,"av":..,"ad":".."}: Value is the desired value
// (or, after a reset, the value now in effect), AC the status (200 applied, 400
// rejected), AV the desired properties' $version and AD a human-readable reason.
type Ack struct {
	Value any    `json:"value"`
	AC    int    `json:"ac"`
	AV    int    `json:"av"`
	AD    string `json:"ad,omitempty"`
}

// maxEchoedValue bounds how much of a rejected value an Ack echoes, so a hostile or
// mistaken desired property cannot bloat the reported properties.
const maxEchoedValue = 256

// Apply applies a module twin desired-properties object (the full desired
// document or a PATCH; "$version", "$metadata" and other "$" keys are ignored) and
// returns the resulting settings and one Ack per non-"$" key.
//
//   - A known writable key with a valid value is applied: ac 200.
//   - null returns the setting to its start-up value (default overridden by the
//     environment): ac 200 with that value.
//   - An unknown key, an env-only key or an invalid value is rejected: ac 400 with a
//     reason quoting the setting name; the previous value stays.
//
// Keys absent from desired keep their current values, so apply a PATCH to the
// current settings, but a full desired document (after a (re)connect) to the
// start-up settings returned by FromEnv, so that deleted keys fall back. Apply
// does not modify s. A desired that is not a JSON object changes nothing and
// returns no acks.
func (s Settings) Apply(desired json.RawMessage) (next Settings, acks map[string]Ack) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(desired, &obj); err != nil || obj == nil {
		return s, nil
	}
	var version int
	if v, ok := obj["$version"]; ok {
		version, _ = parseJSONInt(v)
	}
	next = s
	rv := reflect.ValueOf(&next).Elem()
	start := Defaults()
	if s.start != nil {
		start = *s.start
	}
	acks = make(map[string]Ack, len(obj))
	for key, raw := range obj {
		if strings.HasPrefix(key, "$") {
			continue
		}
		f := byName[key]
		switch {
		case f == nil:
			acks[key] = reject(raw, version, fmt.Sprintf("unknown setting %q; writable settings are %s", key, strings.Join(writableNames(), ", ")))
		case !f.writable:
			acks[key] = reject(raw, version, fmt.Sprintf("setting %q cannot be changed through the twin; set the environment variable %s", key, f.env))
		case string(raw) == "null":
			v := reflect.ValueOf(start).Field(f.index)
			rv.Field(f.index).Set(v)
			acks[key] = Ack{Value: f.encodeJSON(v), AC: 200, AV: version, AD: "reset to the start-up value"}
		default:
			v, err := f.decodeJSON(raw)
			if err != nil {
				e := &Error{Setting: f.name, Source: "desired property", Reason: err.Error()}
				acks[key] = reject(raw, version, e.Error())
				continue
			}
			rv.Field(f.index).Set(v)
			acks[key] = Ack{Value: raw, AC: 200, AV: version, AD: "applied"}
		}
	}
	return next, acks
}

func reject(raw json.RawMessage, version int, reason string) Ack {
	var value any = raw
	if len(raw) > maxEchoedValue {
		value = nil
		reason += " (value not echoed: too long)"
	}
	return Ack{Value: value, AC: 400, AV: version, AD: reason}
}

func writableNames() []string {
	var names []string
	for _, f := range fields {
		if f.writable {
			names = append(names, f.name)
		}
	}
	return names
}

// UnknownEnv returns the variables in environ ("NAME=value" entries, as from
// os.Environ) that start with EnvPrefix but name no setting: most likely typos,
// worth a warning at start.
func UnknownEnv(environ []string) []string {
	known := make(map[string]bool, len(fields))
	for _, f := range fields {
		known[f.env] = true
	}
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix) && !known[name] {
			unknown = append(unknown, name)
		}
	}
	return unknown
}
