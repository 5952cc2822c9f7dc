// Package twin implements IoT Hub twin documents: JSON merge-patch of desired and reported
// properties with IoT Hub's versioning, metadata and limits.
//
// Values are kept as decoded JSON (map[string]any, []any, string, bool, json.Number) so that
// numbers survive a round trip exactly. A Twin is not safe for concurrent use; its owner
// (the registry) serialises access.
package twin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits IoT Hub documents for twins.
const (
	// MaxSectionSize is the largest desired or reported section, in bytes of compact JSON.
	MaxSectionSize = 32 * 1024
	// MaxDepth is the deepest nesting of objects below a section's root.
	MaxDepth = 10
	// MaxKeyLen is the longest property name, in bytes.
	MaxKeyLen = 1024
	// MaxStringLen is the longest string value, in bytes.
	MaxStringLen = 4 * 1024
)

var (
	// ErrInvalid marks a patch IoT Hub refuses with 400: not JSON, not an object, a bad key,
	// too deep or an over-long string.
	ErrInvalid = errors.New("invalid twin patch")
	// ErrTooLarge marks a patch that would grow a section past MaxSectionSize (413).
	ErrTooLarge = errors.New("twin section too large")
)

// Section is the desired or the reported half of a twin.
type Section struct {
	// Props holds the properties (no $version or $metadata).
	Props map[string]any `json:"props"`
	// Meta mirrors Props with $lastUpdated (and, for desired, $lastUpdatedVersion) per node.
	Meta map[string]any `json:"meta"`
	// Version is the section's $version: 1 for a new twin, +1 per patch.
	Version int64 `json:"version"`
}

// Twin is a device or module twin.
type Twin struct {
	Desired  Section        `json:"desired"`
	Reported Section        `json:"reported"`
	Tags     map[string]any `json:"tags,omitempty"`
	// Version counts every change to the twin; the etag is derived from it.
	Version int64 `json:"version"`
}

// New returns an empty twin as IoT Hub creates it with an identity.
func New(now time.Time) *Twin {
	return &Twin{
		Desired:  newSection(now, true),
		Reported: newSection(now, false),
		Version:  1,
	}
}

func newSection(now time.Time, desired bool) Section {
	meta := map[string]any{"$lastUpdated": Timestamp(now)}
	if desired {
		meta["$lastUpdatedVersion"] = json.Number("1")
	}
	return Section{Props: map[string]any{}, Meta: meta, Version: 1}
}

// Timestamp formats t the way IoT Hub does in $metadata (UTC, 7 fractional digits).
func Timestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.0000000Z")
}

// Clone returns a deep copy of t.
func (t *Twin) Clone() *Twin {
	c := *t
	c.Desired = t.Desired.clone()
	c.Reported = t.Reported.clone()
	if t.Tags != nil {
		c.Tags = copyValue(t.Tags).(map[string]any)
	}
	return &c
}

func (s Section) clone() Section {
	return Section{
		Props:   copyValue(s.Props).(map[string]any),
		Meta:    copyValue(s.Meta).(map[string]any),
		Version: s.Version,
	}
}

// DecodePatch parses a patch: a JSON object. Anything else is ErrInvalid.
func DecodePatch(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON value", ErrInvalid)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: the patch must be a JSON object", ErrInvalid)
	}
	return m, nil
}

// Validate checks a patch against IoT Hub's key, depth and string rules.
func Validate(patch map[string]any) error {
	return validate(patch, 1, "")
}

func validate(v any, depth int, path string) error {
	switch v := v.(type) {
	case map[string]any:
		if depth > MaxDepth {
			return fmt.Errorf("%w: %s nests deeper than %d levels", ErrInvalid, orRoot(path), MaxDepth)
		}
		for k, child := range v {
			if err := checkKey(k); err != nil {
				return fmt.Errorf("%w: property name %q under %s: %s", ErrInvalid, k, orRoot(path), err)
			}
			if err := validate(child, depth+1, path+"."+k); err != nil {
				return err
			}
		}
	case []any:
		for _, child := range v {
			if child == nil {
				return fmt.Errorf("%w: %s: arrays may not contain null", ErrInvalid, orRoot(path))
			}
			if err := validate(child, depth, path); err != nil {
				return err
			}
		}
	case string:
		if len(v) > MaxStringLen {
			return fmt.Errorf("%w: %s: string values are limited to %d bytes", ErrInvalid, orRoot(path), MaxStringLen)
		}
	}
	return nil
}

func checkKey(k string) error {
	switch {
	case k == "":
		return errors.New("empty")
	case len(k) > MaxKeyLen:
		return fmt.Errorf("longer than %d bytes", MaxKeyLen)
	case !utf8.ValidString(k):
		return errors.New("not UTF-8")
	case strings.ContainsAny(k, ".$ "):
		return errors.New("must not contain '.', '$' or space")
	case strings.ContainsFunc(k, unicode.IsControl):
		return errors.New("must not contain control characters")
	}
	return nil
}

func orRoot(path string) string {
	if path == "" {
		return "the root"
	}
	return strings.TrimPrefix(path, ".")
}

// Apply merges patch into s (RFC 7396: null deletes, objects merge, everything else replaces),
// updates the metadata and increments the version. recordVersion adds $lastUpdatedVersion to
// the metadata (desired properties only). The patch must have passed Validate. On error s is
// unchanged.
func (s *Section) Apply(patch map[string]any, now time.Time, recordVersion bool) error {
	next := s.clone()
	next.Version++
	ts := Timestamp(now)
	stamp := func(node map[string]any) {
		node["$lastUpdated"] = ts
		if recordVersion {
			node["$lastUpdatedVersion"] = json.Number(fmt.Sprint(next.Version))
		}
	}
	stamp(next.Meta)
	merge(next.Props, next.Meta, patch, stamp)
	size, err := Size(next.Props)
	if err != nil {
		return err
	}
	if size > MaxSectionSize {
		return fmt.Errorf("%w: %d bytes after the patch, the limit is %d", ErrTooLarge, size, MaxSectionSize)
	}
	*s = next
	return nil
}

func merge(target, meta, patch map[string]any, stamp func(map[string]any)) {
	for k, v := range patch {
		if v == nil {
			delete(target, k)
			delete(meta, k)
			continue
		}
		obj, isObj := v.(map[string]any)
		if !isObj {
			target[k] = copyValue(v)
			leaf := map[string]any{}
			stamp(leaf)
			meta[k] = leaf
			continue
		}
		sub, ok := target[k].(map[string]any)
		if !ok {
			sub = map[string]any{}
			target[k] = sub
		}
		subMeta, ok := meta[k].(map[string]any)
		if !ok {
			subMeta = map[string]any{}
			meta[k] = subMeta
		}
		stamp(subMeta)
		merge(sub, subMeta, obj, stamp)
	}
}

// Size returns the length of v as compact JSON.
func Size(v any) (int, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("failed to measure twin section: %w", err)
	}
	return len(b), nil
}

// DeviceView is the section as a device reads it over MQTT: the properties plus $version.
func (s Section) DeviceView() map[string]any {
	m := maps.Clone(s.Props)
	m["$version"] = s.Version
	return m
}

// ServiceView is the section as the service REST API returns it: properties, $metadata and
// $version.
func (s Section) ServiceView() map[string]any {
	m := maps.Clone(s.Props)
	m["$metadata"] = s.Meta
	m["$version"] = s.Version
	return m
}

// MergeTags applies a merge patch to the tags.
func (t *Twin) MergeTags(patch map[string]any) {
	if t.Tags == nil {
		t.Tags = map[string]any{}
	}
	mergePlain(t.Tags, patch)
	if len(t.Tags) == 0 {
		t.Tags = nil
	}
}

func mergePlain(target, patch map[string]any) {
	for k, v := range patch {
		if v == nil {
			delete(target, k)
			continue
		}
		obj, isObj := v.(map[string]any)
		if !isObj {
			target[k] = copyValue(v)
			continue
		}
		sub, ok := target[k].(map[string]any)
		if !ok {
			sub = map[string]any{}
			target[k] = sub
		}
		mergePlain(sub, obj)
	}
}

func copyValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, c := range v {
			m[k] = copyValue(c)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, c := range v {
			s[i] = copyValue(c)
		}
		return s
	default:
		return v
	}
}
