package settings

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"text/tabwriter"
)

// Field documents one setting. It is derived from the Settings struct and
// Defaults, so --help, the README table and the deployment templates can be
// checked against the code.
type Field struct {
	Name        string          // desired-property name, e.g. "maxSessions"
	Env         string          // environment variable, e.g. "RTSPTUNNEL_MAXSESSIONS"
	Type        string          // "string", "integer", "boolean", "duration", "list of integers", "list of strings", "object"
	Default     string          // default in environment syntax, e.g. "5s", "554", "" for empty
	DefaultJSON json.RawMessage // default as a desired-property value, e.g. "5s", [554], {}
	Accepts     string          // the accepted values, as error messages state them
	Description string
	Writable    bool // false: environment only
}

// Fields lists every setting in declaration order.
func Fields() []Field {
	def := reflect.ValueOf(Defaults())
	out := make([]Field, 0, len(fields))
	for _, f := range fields {
		v := def.Field(f.index)
		out = append(out, Field{
			Name:        f.name,
			Env:         f.env,
			Type:        f.typeName(),
			Default:     f.envText(v),
			DefaultJSON: f.encodeJSON(v),
			Accepts:     f.accepts(),
			Description: f.help,
			Writable:    f.writable,
		})
	}
	return out
}

// Usage returns the settings table for --help.
func Usage() string {
	var b strings.Builder
	b.WriteString("Settings (environment variable; module twin desired property of the same meaning unless env-only):\n\n")
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  ENVIRONMENT\tTWIN\tTYPE\tDEFAULT")
	for _, f := range Fields() {
		twin := f.Name
		if !f.Writable {
			twin = "(env-only)"
		}
		def := f.Default
		if def == "" {
			def = string(f.DefaultJSON) // {}, [] or ""
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", f.Env, twin, f.Type, def)
	}
	w.Flush()
	b.WriteString("\n")
	for _, f := range Fields() {
		fmt.Fprintf(&b, "  %s\n      %s\n", f.Env, f.Description)
	}
	b.WriteString("\nDurations are Go durations (30s, 1m30s) or numbers of seconds; lists are JSON arrays or comma-separated.\n")
	return b.String()
}
