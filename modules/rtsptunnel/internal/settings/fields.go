package settings

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// kind is the value syntax of a setting, derived from its Go type.
type kind int

const (
	kindString kind = iota
	kindInt
	kindBool
	kindDuration
	kindIntList
	kindStringList
	kindTargets
)

var durationType = reflect.TypeFor[time.Duration]()

// field is the parsed description of one Settings field. Static after init.
type field struct {
	index    int
	name     string // desired-property name
	env      string // environment variable name
	kind     kind
	writable bool
	help     string
	min, max *int64 // inclusive; nanoseconds for durations
	enum     []string
	check    func(reflect.Value) error
}

// fields lists the settings in struct order; byName indexes it.
var (
	fields = mustParseFields()
	byName = func() map[string]*field {
		m := make(map[string]*field, len(fields))
		for _, f := range fields {
			m[f.name] = f
		}
		return m
	}()
)

func mustParseFields() []*field {
	t := reflect.TypeFor[Settings]()
	var out []*field
	for i := range t.NumField() {
		sf := t.Field(i)
		tag, ok := sf.Tag.Lookup("setting")
		if !ok {
			if sf.IsExported() {
				panic(fmt.Sprintf("settings: field %s has no setting tag", sf.Name))
			}
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		f := &field{
			index:    i,
			name:     name,
			env:      EnvPrefix + strings.ToUpper(name),
			writable: opts != "envonly",
			help:     sf.Tag.Get("help"),
		}
		if f.help == "" {
			panic(fmt.Sprintf("settings: field %s has no help tag", sf.Name))
		}
		switch {
		case sf.Type == durationType:
			f.kind = kindDuration
		case sf.Type == reflect.TypeFor[Targets]():
			f.kind = kindTargets
		case sf.Type.Kind() == reflect.String:
			f.kind = kindString
		case sf.Type.Kind() == reflect.Int:
			f.kind = kindInt
		case sf.Type.Kind() == reflect.Bool:
			f.kind = kindBool
		case sf.Type == reflect.TypeFor[[]int]():
			f.kind = kindIntList
		case sf.Type == reflect.TypeFor[[]string]():
			f.kind = kindStringList
		default:
			panic(fmt.Sprintf("settings: field %s has unsupported type %s", sf.Name, sf.Type))
		}
		f.min = mustLimit(f, sf.Tag.Get("min"))
		f.max = mustLimit(f, sf.Tag.Get("max"))
		if e := sf.Tag.Get("enum"); e != "" {
			f.enum = strings.Split(e, ",")
		}
		if c := sf.Tag.Get("check"); c != "" {
			f.check = checks[c]
			if f.check == nil {
				panic(fmt.Sprintf("settings: field %s names unknown check %q", sf.Name, c))
			}
		}
		out = append(out, f)
	}
	return out
}

func mustLimit(f *field, s string) *int64 {
	if s == "" {
		return nil
	}
	var v int64
	var err error
	if f.kind == kindDuration {
		var d time.Duration
		d, err = time.ParseDuration(s)
		v = int64(d)
	} else {
		v, err = strconv.ParseInt(s, 10, 64)
	}
	if err != nil {
		panic(fmt.Sprintf("settings: %s: bad limit %q: %v", f.name, s, err))
	}
	return &v
}

// Error is a rejected setting value. Setting is the desired-property name;
// Source says where the value came from ("environment variable RTSPTUNNEL_X",
// "desired property").
type Error struct {
	Setting string
	Source  string
	Value   string // the offending value, shortened for display
	Reason  string // what is accepted
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "setting %q", e.Setting)
	if e.Source != "" {
		fmt.Fprintf(&b, " (%s)", e.Source)
	}
	if e.Value != "" {
		fmt.Fprintf(&b, ": invalid value %s", e.Value)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// shorten quotes v for an error message, cutting long values.
func shorten(v string) string {
	const max = 64
	if len(v) > max {
		v = v[:max] + "..."
	}
	return strconv.Quote(v)
}

// accepts describes the accepted values of f, for error messages and docs.
func (f *field) accepts() string {
	var s string
	switch f.kind {
	case kindString:
		if f.enum != nil {
			return "expected one of " + strings.Join(f.enum, ", ")
		}
		s = "expected a string"
	case kindInt:
		s = "expected an integer"
	case kindBool:
		return "expected true or false"
	case kindDuration:
		s = `expected a duration such as "30s" or "1m30s", or a number of seconds`
	case kindIntList:
		s = "expected a list of integers"
	case kindStringList:
		s = "expected a list of strings"
	case kindTargets:
		return `expected an object mapping ports to cameras, such as {"554":"192.168.10.21:554"}`
	}
	fmtLim := func(v int64) string {
		if f.kind == kindDuration {
			return formatDuration(time.Duration(v))
		}
		return strconv.FormatInt(v, 10)
	}
	each := ""
	if f.kind == kindIntList {
		each = " each"
	}
	switch {
	case f.min != nil && f.max != nil:
		s += fmt.Sprintf("%s from %s to %s", each, fmtLim(*f.min), fmtLim(*f.max))
	case f.min != nil:
		s += fmt.Sprintf("%s of at least %s", each, fmtLim(*f.min))
	case f.max != nil:
		s += fmt.Sprintf("%s of at most %s", each, fmtLim(*f.max))
	}
	return s
}

// typeName is the type shown in documentation.
func (f *field) typeName() string {
	return [...]string{
		kindString:     "string",
		kindInt:        "integer",
		kindBool:       "boolean",
		kindDuration:   "duration",
		kindIntList:    "list of integers",
		kindStringList: "list of strings",
		kindTargets:    "object",
	}[f.kind]
}

// decodeJSON parses a JSON value (not null) for f strictly and validates it.
// The error is a bare reason; callers wrap it into an *Error.
func (f *field) decodeJSON(raw json.RawMessage) (reflect.Value, error) {
	bad := fmt.Errorf("%s", f.accepts())
	var v reflect.Value
	switch f.kind {
	case kindString:
		var s string
		if err := strictUnmarshal(raw, &s); err != nil {
			return v, bad
		}
		v = reflect.ValueOf(s)
	case kindInt:
		n, ok := parseJSONInt(raw)
		if !ok {
			return v, bad
		}
		v = reflect.ValueOf(n)
	case kindBool:
		var b bool
		if err := strictUnmarshal(raw, &b); err != nil {
			return v, bad
		}
		v = reflect.ValueOf(b)
	case kindDuration:
		d, ok := parseJSONDuration(raw)
		if !ok {
			return v, bad
		}
		v = reflect.ValueOf(d)
	case kindIntList:
		var items []json.RawMessage
		if err := strictUnmarshal(raw, &items); err != nil || items == nil {
			return v, bad
		}
		l := make([]int, 0, len(items))
		for _, it := range items {
			n, ok := parseJSONInt(it)
			if !ok {
				return v, bad
			}
			l = append(l, n)
		}
		v = reflect.ValueOf(l)
	case kindStringList:
		var l []string
		if err := strictUnmarshal(raw, &l); err != nil || l == nil {
			return v, bad
		}
		v = reflect.ValueOf(l)
	case kindTargets:
		var m map[string]string
		if err := strictUnmarshal(raw, &m); err != nil || m == nil {
			return v, bad
		}
		t := make(Targets, len(m))
		for k, addr := range m {
			p, err := strconv.Atoi(k)
			if err != nil || strconv.Itoa(p) != k {
				return v, fmt.Errorf("port %s is not an integer; %s", shorten(k), f.accepts())
			}
			t[p] = addr
		}
		v = reflect.ValueOf(t)
	}
	return v, f.validate(v)
}

// validate checks limits, enum and the named check.
func (f *field) validate(v reflect.Value) error {
	inRange := func(n int64) bool {
		return (f.min == nil || n >= *f.min) && (f.max == nil || n <= *f.max)
	}
	switch f.kind {
	case kindInt, kindDuration:
		if !inRange(v.Int()) {
			return fmt.Errorf("%s", f.accepts())
		}
	case kindIntList:
		for _, n := range v.Interface().([]int) {
			if !inRange(int64(n)) {
				return fmt.Errorf("%d is out of range; %s", n, f.accepts())
			}
		}
	case kindString:
		if f.enum != nil && !slices.Contains(f.enum, v.String()) {
			return fmt.Errorf("%s", f.accepts())
		}
	}
	if f.check != nil {
		return f.check(v)
	}
	return nil
}

// envToJSON turns an environment value into the JSON text of the same value,
// so that the environment and the twin share one decoder. See the package
// documentation for the accepted forms.
func (f *field) envToJSON(text string) json.RawMessage {
	trimmed := strings.TrimSpace(text)
	switch f.kind {
	case kindString:
		b, _ := json.Marshal(text)
		return b
	case kindDuration:
		if json.Valid([]byte(trimmed)) {
			return json.RawMessage(trimmed) // a number of seconds, or a quoted string
		}
		b, _ := json.Marshal(trimmed)
		return b
	case kindIntList, kindStringList:
		if strings.HasPrefix(trimmed, "[") {
			return json.RawMessage(trimmed)
		}
		var items []string
		for it := range strings.SplitSeq(trimmed, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		if f.kind == kindStringList {
			b, _ := json.Marshal(append([]string{}, items...))
			return b
		}
		// Integers are written as-is so that the JSON decoder rejects non-integers.
		return json.RawMessage("[" + strings.Join(items, ",") + "]")
	case kindTargets:
		if strings.HasPrefix(trimmed, "{") {
			return json.RawMessage(trimmed)
		}
		m := map[string]string{}
		for it := range strings.SplitSeq(trimmed, ",") {
			if it = strings.TrimSpace(it); it == "" {
				continue
			}
			k, addr, ok := strings.Cut(it, "=")
			if !ok {
				return json.RawMessage(strconv.Quote(it)) // rejected by the decoder
			}
			m[strings.TrimSpace(k)] = strings.TrimSpace(addr)
		}
		b, _ := json.Marshal(m)
		return b
	default: // int, bool: JSON literals
		return json.RawMessage(trimmed)
	}
}

// encodeJSON returns the canonical JSON of a value of f.
func (f *field) encodeJSON(v reflect.Value) json.RawMessage {
	var x any = v.Interface()
	switch f.kind {
	case kindDuration:
		x = formatDuration(time.Duration(v.Int()))
	case kindTargets:
		m := map[string]string{}
		for p, addr := range v.Interface().(Targets) {
			m[strconv.Itoa(p)] = addr
		}
		x = m
	case kindIntList, kindStringList:
		if v.Len() == 0 {
			return json.RawMessage("[]")
		}
	}
	b, err := json.Marshal(x)
	if err != nil {
		panic(fmt.Sprintf("settings: cannot encode %s: %v", f.name, err))
	}
	return b
}

// envText returns the environment form of a value of f (for documentation).
func (f *field) envText(v reflect.Value) string {
	switch f.kind {
	case kindString:
		return v.String()
	case kindDuration:
		return formatDuration(time.Duration(v.Int()))
	case kindTargets:
		ports := make([]int, 0, v.Len())
		t := v.Interface().(Targets)
		for p := range t {
			ports = append(ports, p)
		}
		sort.Ints(ports)
		parts := make([]string, 0, len(ports))
		for _, p := range ports {
			parts = append(parts, fmt.Sprintf("%d=%s", p, t[p]))
		}
		return strings.Join(parts, ",")
	case kindIntList, kindStringList:
		parts := make([]string, 0, v.Len())
		for i := range v.Len() {
			parts = append(parts, fmt.Sprint(v.Index(i).Interface()))
		}
		return strings.Join(parts, ",")
	}
	return string(f.encodeJSON(v))
}

// strictUnmarshal decodes one JSON value into v, rejecting trailing data.
func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data")
	}
	return nil
}

// parseJSONInt accepts only a JSON integer literal that fits an int.
func parseJSONInt(raw []byte) (int, bool) {
	var x any
	if err := strictUnmarshal(raw, &x); err != nil {
		return 0, false
	}
	n, ok := x.(json.Number) // not a string: json.Number would also take "554"
	if !ok {
		return 0, false
	}
	i, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil || i < math.MinInt || i > math.MaxInt {
		return 0, false
	}
	return int(i), true
}

// parseJSONDuration accepts a JSON number of seconds or a Go duration string.
func parseJSONDuration(raw []byte) (time.Duration, bool) {
	var x any
	if err := strictUnmarshal(raw, &x); err != nil {
		return 0, false
	}
	switch x := x.(type) {
	case json.Number:
		secs, err := x.Float64()
		if err != nil || math.IsNaN(secs) || math.Abs(secs) > math.MaxInt64/float64(time.Second) {
			return 0, false
		}
		return time.Duration(math.Round(secs * float64(time.Second))), true
	case string:
		d, err := time.ParseDuration(x)
		return d, err == nil
	}
	return 0, false
}

// formatDuration prints d like time.Duration.String without zero tails: 1h, 1m, 90s → 1m30s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
