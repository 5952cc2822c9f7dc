package twin

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestApply(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		start   string
		patches []string
		want    string
		version int64
	}{
		{name: "add", start: `{}`, patches: []string{`{"a":1}`}, want: `{"a":1}`, version: 2},
		{name: "nested merge", start: `{"a":{"b":1,"c":2}}`, patches: []string{`{"a":{"c":3,"d":4}}`}, want: `{"a":{"b":1,"c":3,"d":4}}`, version: 2},
		{name: "null deletes", start: `{"a":1,"b":2}`, patches: []string{`{"a":null}`}, want: `{"b":2}`, version: 2},
		{name: "null deletes nested", start: `{"a":{"b":1,"c":2}}`, patches: []string{`{"a":{"b":null}}`}, want: `{"a":{"c":2}}`, version: 2},
		{name: "object replaces leaf, nulls dropped", start: `{"a":1}`, patches: []string{`{"a":{"x":null,"y":true}}`}, want: `{"a":{"y":true}}`, version: 2},
		{name: "arrays replace", start: `{"a":[1,2]}`, patches: []string{`{"a":[3]}`}, want: `{"a":[3]}`, version: 2},
		{name: "versions count patches", start: `{}`, patches: []string{`{"a":1}`, `{"a":2}`, `{}`}, want: `{"a":2}`, version: 4},
		{name: "big numbers exact", start: `{}`, patches: []string{`{"n":12345678901234567890}`}, want: `{"n":12345678901234567890}`, version: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start, err := DecodePatch([]byte(tt.start))
			if err != nil {
				t.Fatal(err)
			}
			s := newSection(now, false)
			s.Props = start
			for _, p := range tt.patches {
				m, err := DecodePatch([]byte(p))
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Apply(m, now, false); err != nil {
					t.Fatal(err)
				}
			}
			got, _ := json.Marshal(s.Props)
			if string(got) != tt.want {
				t.Errorf("props = %s, want %s", got, tt.want)
			}
			if s.Version != tt.version {
				t.Errorf("version = %d, want %d", s.Version, tt.version)
			}
		})
	}
}

func TestMetadata(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tw := New(t0)
	t1 := t0.Add(time.Minute)
	p, _ := DecodePatch([]byte(`{"a":{"b":1},"c":"x"}`))
	if err := tw.Desired.Apply(p, t1, true); err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(tw.Desired.Meta)
	want := `{"$lastUpdated":"2026-01-01T00:01:00.0000000Z","$lastUpdatedVersion":2,"a":{"$lastUpdated":"2026-01-01T00:01:00.0000000Z","$lastUpdatedVersion":2,"b":{"$lastUpdated":"2026-01-01T00:01:00.0000000Z","$lastUpdatedVersion":2}},"c":{"$lastUpdated":"2026-01-01T00:01:00.0000000Z","$lastUpdatedVersion":2}}`
	if string(meta) != want {
		t.Errorf("meta = %s\nwant   %s", meta, want)
	}
	p, _ = DecodePatch([]byte(`{"a":null}`))
	if err := tw.Desired.Apply(p, t1, true); err != nil {
		t.Fatal(err)
	}
	if _, ok := tw.Desired.Meta["a"]; ok {
		t.Errorf("metadata of a deleted property kept: %v", tw.Desired.Meta)
	}
}

func TestValidateAndLimits(t *testing.T) {
	deep := `{"l1":{"l2":{"l3":{"l4":{"l5":{"l6":{"l7":{"l8":{"l9":{"l10":1}}}}}}}}}}`
	tooDeep := `{"l1":{"l2":{"l3":{"l4":{"l5":{"l6":{"l7":{"l8":{"l9":{"l10":{"l11":1}}}}}}}}}}}`
	tests := []struct {
		name  string
		patch string
		want  error
	}{
		{name: "ok", patch: `{"a":1}`},
		{name: "depth 10", patch: deep},
		{name: "depth 11", patch: tooDeep, want: ErrInvalid},
		{name: "not JSON", patch: `{"a":`, want: ErrInvalid},
		{name: "not an object", patch: `[1]`, want: ErrInvalid},
		{name: "string", patch: `"x"`, want: ErrInvalid},
		{name: "trailing data", patch: `{} {}`, want: ErrInvalid},
		{name: "dot in key", patch: `{"a.b":1}`, want: ErrInvalid},
		{name: "dollar in key", patch: `{"$version":1}`, want: ErrInvalid},
		{name: "space in key", patch: `{"a b":1}`, want: ErrInvalid},
		{name: "control char in key", patch: `{"a\u0001":1}`, want: ErrInvalid},
		{name: "nested bad key", patch: `{"a":{"b.c":1}}`, want: ErrInvalid},
		{name: "long key", patch: `{"` + strings.Repeat("k", MaxKeyLen+1) + `":1}`, want: ErrInvalid},
		{name: "long string", patch: `{"s":"` + strings.Repeat("s", MaxStringLen+1) + `"}`, want: ErrInvalid},
		{name: "null in array", patch: `{"a":[null]}`, want: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DecodePatch([]byte(tt.patch))
			if err == nil {
				err = Validate(p)
			}
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSizeLimit(t *testing.T) {
	now := time.Now()
	s := newSection(now, false)
	chunk := strings.Repeat("x", 4000)
	for i := 0; ; i++ {
		p := map[string]any{"k" + string(rune('a'+i)): chunk}
		err := s.Apply(p, now, false)
		if errors.Is(err, ErrTooLarge) {
			size, _ := Size(s.Props)
			if size > MaxSectionSize || size < MaxSectionSize-5000 {
				t.Errorf("refused at %d bytes", size)
			}
			if s.Version != int64(i+1) {
				t.Errorf("version changed by a refused patch: %d", s.Version)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
