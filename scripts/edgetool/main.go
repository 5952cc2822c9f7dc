// Command edgetool reads the IoT Edge solution files (module.json, the
// deployment templates and .env) the way the Azure IoT Edge tools do, for
// scripts/build-images.sh and scripts/gen-deployment.sh. It uses only the
// standard library and runs with `go run scripts/edgetool/main.go` from the
// repository root (GOWORK=off: the root module, whose only package it is).
//
//	edgetool images   [-env .env] [-platform p]...
//	    one line per image to build: platform, Dockerfile, build context,
//	    image tag, version (tab-separated)
//	edgetool genconfig [-env .env] [-template deployment.template.json] [-platform amd64] [-out config]
//	    writes <out>/deployment[.debug].<platform>.json and prints its path
//
// genconfig does what `iotedgedev genconfig` does: it replaces ${NAME} in
// every string of the template with the environment variable NAME (from the
// process environment, else from the .env file), ${MODULES.<folder>} with the
// image of modules/<folder>/module.json for the platform
// (<repository>:<version>-<platform>), ${MODULES.<folder>.debug} with the
// <platform>.debug image and ${MODULES.<folder>.<platform>} with that
// platform's image; turns createOptions objects into JSON strings split into
// createOptions, createOptions01, ... of at most 512 characters; and drops
// "$schema-template". It fails when a ${...} cannot be resolved. Registry
// credentials whose username and password are both empty (a local registry)
// are left out, with a note on stderr.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "images":
		err = images(os.Args[2:])
	case "genconfig":
		err = genconfig(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "edgetool %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: edgetool images [-env FILE] [-platform P]...\n       edgetool genconfig [-env FILE] [-template FILE] [-platform P] [-out DIR]")
	os.Exit(2)
}

// listFlag collects a repeatable flag; commas also separate values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// module is one modules/<folder>/module.json.
type module struct {
	Folder     string
	Dir        string
	Repository string            // expanded and lower-cased
	Version    string            // image.tag.version
	Platforms  map[string]string // platform -> Dockerfile path relative to Dir
	Context    string            // contextPath, relative to Dir
}

func (m *module) image(platform string) string {
	return fmt.Sprintf("%s:%s-%s", m.Repository, m.Version, platform)
}

func images(args []string) error {
	fs := flag.NewFlagSet("images", flag.ExitOnError)
	envFile := fs.String("env", ".env", "file with CONTAINER_REGISTRY_SERVER and friends (KEY=VALUE lines); the process environment wins")
	var only listFlag
	fs.Var(&only, "platform", "platform to list (repeatable or comma-separated); default all in module.json")
	fs.Parse(args)
	env, err := loadEnv(*envFile)
	if err != nil {
		return err
	}
	mods, err := loadModules("modules", env)
	if err != nil {
		return err
	}
	found := map[string]bool{}
	for _, m := range mods {
		for _, p := range sortedKeys(m.Platforms) {
			if len(only) > 0 && !contains(only, p) {
				continue
			}
			found[p] = true
			fmt.Printf("%s\t%s\t%s\t%s\t%s\n", p,
				filepath.Join(m.Dir, m.Platforms[p]), filepath.Join(m.Dir, m.Context), m.image(p), m.Version)
		}
	}
	for _, p := range only {
		if !found[p] {
			return fmt.Errorf("no module.json has platform %q", p)
		}
	}
	return nil
}

func genconfig(args []string) error {
	fs := flag.NewFlagSet("genconfig", flag.ExitOnError)
	envFile := fs.String("env", ".env", "file with CONTAINER_REGISTRY_SERVER and friends (KEY=VALUE lines); the process environment wins")
	template := fs.String("template", "deployment.template.json", "deployment template")
	platform := fs.String("platform", "amd64", "default platform: amd64, arm32v7 or arm64v8")
	out := fs.String("out", "config", "output folder")
	fs.Parse(args)

	env, err := loadEnv(*envFile)
	if err != nil {
		return err
	}
	mods, err := loadModules(filepath.Join(filepath.Dir(*template), "modules"), env)
	if err != nil {
		return err
	}
	placeholders := map[string]string{}
	for _, m := range mods {
		base := "MODULES." + m.Folder
		for p := range m.Platforms {
			placeholders[base+"."+p] = m.image(p)
			switch p {
			case *platform:
				placeholders[base] = m.image(p)
			case *platform + ".debug":
				placeholders[base+".debug"] = m.image(p)
			}
		}
	}

	raw, err := os.ReadFile(*template)
	if err != nil {
		return err
	}
	doc, err := decodeOrdered(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", *template, err)
	}
	root, ok := doc.(*object)
	if !ok {
		return fmt.Errorf("%s: not a JSON object", *template)
	}
	var unresolved []string
	doc = expand(doc, func(name string) (string, bool) {
		if v, ok := placeholders[name]; ok {
			return v, true
		}
		if strings.HasPrefix(name, "MODULES.") {
			return "", false
		}
		v, ok := env[name]
		return v, ok
	}, &unresolved)
	if len(unresolved) > 0 {
		sort.Strings(unresolved)
		return fmt.Errorf("%s: cannot resolve %s (set the variables in %s or the environment; a MODULES.<folder>[.debug] placeholder needs a module.json platform %q or %q)",
			*template, strings.Join(dedupe(unresolved), ", "), *envFile, *platform, *platform+".debug")
	}
	root.delete("$schema-template")
	agent := dig(root, "modulesContent", "$edgeAgent", "properties.desired")
	if agent == nil {
		return fmt.Errorf("%s: no modulesContent.$edgeAgent.properties.desired", *template)
	}
	for _, group := range []string{"systemModules", "modules"} {
		mods := dig(agent, group)
		if mods == nil {
			continue
		}
		for _, name := range mods.keys {
			settings := dig(mods, name, "settings")
			if settings == nil {
				continue
			}
			if err := convertCreateOptions(settings); err != nil {
				return fmt.Errorf("%s: module %s: %w", *template, name, err)
			}
		}
	}
	if creds := dig(agent, "runtime", "settings", "registryCredentials"); creds != nil {
		for _, name := range slices.Clone(creds.keys) {
			c := dig(creds, name)
			if c != nil && c.vals["username"] == "" && c.vals["password"] == "" {
				fmt.Fprintf(os.Stderr, "note: registry credentials %q have no username or password: left out (anonymous pull from %v)\n", name, c.vals["address"])
				creds.delete(name)
			}
		}
	}

	name := strings.Replace(filepath.Base(*template), ".template", "", 1)
	name = strings.TrimSuffix(name, ".json") + "." + *platform + ".json"
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	// The generated manifests hold the registry password: keep them out of git.
	ignore := filepath.Join(*out, ".gitignore")
	if _, err := os.Stat(ignore); errors.Is(err, os.ErrNotExist) {
		os.WriteFile(ignore, []byte("# generated by scripts/gen-deployment.sh: may contain registry credentials\n*\n"), 0o644)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(root); err != nil {
		return err
	}
	path := filepath.Join(*out, name)
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		return err
	}
	fmt.Println(path)
	return nil
}

var placeholderRe = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_.\-]*)\}`)

// expand replaces ${NAME} in every string of v (not in keys) through lookup,
// recording names it cannot resolve.
func expand(v any, lookup func(string) (string, bool), unresolved *[]string) any {
	switch x := v.(type) {
	case string:
		return placeholderRe.ReplaceAllStringFunc(x, func(m string) string {
			name := m[2 : len(m)-1]
			if val, ok := lookup(name); ok {
				return val
			}
			*unresolved = append(*unresolved, m)
			return m
		})
	case *object:
		for _, k := range x.keys {
			x.vals[k] = expand(x.vals[k], lookup, unresolved)
		}
	case []any:
		for i, e := range x {
			x[i] = expand(e, lookup, unresolved)
		}
	}
	return v
}

// createOptionsChunk is the longest string IoT Hub accepts in a twin
// property value that edgeAgent reads createOptions from; longer options are
// split into createOptions01, createOptions02, ... (as the IoT Edge tools do).
const createOptionsChunk = 512

func convertCreateOptions(settings *object) error {
	co, ok := settings.vals["createOptions"]
	if !ok {
		return nil
	}
	var s string
	switch x := co.(type) {
	case string:
		s = x
		if s != "" && !json.Valid([]byte(s)) {
			return errors.New("createOptions is a string but not valid JSON")
		}
	case *object:
		b, err := x.MarshalJSON()
		if err != nil {
			return err
		}
		s = string(b)
	default:
		return errors.New("createOptions must be an object or a JSON string")
	}
	chunks := splitChunks(s, createOptionsChunk)
	if len(chunks) > 100 {
		return errors.New("createOptions is too long")
	}
	settings.set("createOptions", chunks[0])
	for i, c := range chunks[1:] {
		settings.set(fmt.Sprintf("createOptions%02d", i+1), c)
	}
	return nil
}

// splitChunks cuts s into pieces of at most n bytes, never inside a UTF-8 sequence.
func splitChunks(s string, n int) []string {
	var out []string
	for len(s) > n {
		cut := n
		for cut > 0 && s[cut]&0xC0 == 0x80 {
			cut--
		}
		out = append(out, s[:cut])
		s = s[cut:]
	}
	return append(out, s)
}

// loadModules reads every <dir>/<folder>/module.json.
func loadModules(dir string, env map[string]string) ([]*module, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var mods []*module
	for _, e := range entries {
		path := filepath.Join(dir, e.Name(), "module.json")
		raw, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, err
		}
		var mj struct {
			Image struct {
				Repository string `json:"repository"`
				Tag        struct {
					Version   string            `json:"version"`
					Platforms map[string]string `json:"platforms"`
				} `json:"tag"`
				ContextPath string `json:"contextPath"`
			} `json:"image"`
		}
		if err := json.Unmarshal(raw, &mj); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var unresolved []string
		repo := expand(mj.Image.Repository, func(name string) (string, bool) { v, ok := env[name]; return v, ok && v != "" }, &unresolved).(string)
		if len(unresolved) > 0 {
			return nil, fmt.Errorf("%s: repository %q: %s not set (copy .env.example to .env and fill it in)", path, mj.Image.Repository, strings.Join(dedupe(unresolved), ", "))
		}
		if mj.Image.Tag.Version == "" || len(mj.Image.Tag.Platforms) == 0 {
			return nil, fmt.Errorf("%s: image.tag.version and image.tag.platforms are required", path)
		}
		ctx := mj.Image.ContextPath
		if ctx == "" {
			ctx = "."
		}
		mods = append(mods, &module{
			Folder:     e.Name(),
			Dir:        filepath.Join(dir, e.Name()),
			Repository: strings.ToLower(repo),
			Version:    mj.Image.Tag.Version,
			Platforms:  mj.Image.Tag.Platforms,
			Context:    ctx,
		})
	}
	return mods, nil
}

// loadEnv returns the variables of an env file (KEY=VALUE, # comments,
// optional export and quotes) overridden by the process environment. A missing
// file is not an error.
func loadEnv(path string) (map[string]string, error) {
	env := map[string]string{}
	f, err := os.Open(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		defer f.Close()
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			line = strings.TrimPrefix(line, "export ")
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, fmt.Errorf("%s:%d: not KEY=VALUE", path, n)
			}
			v = strings.TrimSpace(v)
			if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
				v = v[1 : len(v)-1]
			}
			env[strings.TrimSpace(k)] = v
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

func dig(o *object, keys ...string) *object {
	for _, k := range keys {
		next, ok := o.vals[k].(*object)
		if !ok {
			return nil
		}
		o = next
	}
	return o
}

// object is a JSON object that keeps its keys in order, so that the manifest
// reads like its template.
type object struct {
	keys []string
	vals map[string]any // string, json.Number, bool, nil, []any or *object
}

func (o *object) set(k string, v any) {
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
}

func (o *object) delete(k string) {
	if _, ok := o.vals[k]; ok {
		delete(o.vals, k)
		o.keys = slices.DeleteFunc(o.keys, func(e string) bool { return e == k })
	}
}

// MarshalJSON writes the object compactly, keys in order, without HTML escaping.
func (o *object) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, err := marshal(k)
		if err != nil {
			return nil, err
		}
		vb, err := marshal(o.vals[k])
		if err != nil {
			return nil, err
		}
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(vb)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// decodeOrdered parses one JSON value, objects as *object.
func decodeOrdered(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		o := &object{vals: map[string]any{}}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k := kt.(string)
			if _, dup := o.vals[k]; dup {
				return nil, fmt.Errorf("duplicate key %q", k)
			}
			v, err := decodeValue(dec)
			if err != nil {
				return nil, err
			}
			o.set(k, v)
		}
		_, err := dec.Token() // '}'
		return o, err
	case json.Delim('['):
		l := []any{}
		for dec.More() {
			v, err := decodeValue(dec)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		_, err := dec.Token() // ']'
		return l, err
	}
	return tok, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func contains(l []string, s string) bool {
	for _, e := range l {
		if e == s {
			return true
		}
	}
	return false
}

func dedupe(l []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range l {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
