package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// decodeStrict decodes JSON data into v (a pointer) like encoding/json, but
// key names must match the json tags exactly, unknown keys are errors, and
// every error names the offending path ("cameras[1].localPort").
func decodeStrict(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("decodeStrict needs a non-nil pointer")
	}
	return decodeValue("", bytes.TrimSpace(data), rv.Elem())
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

func decodeValue(path string, data []byte, v reflect.Value) error {
	if string(data) == "null" {
		return nil // like encoding/json: null leaves the value alone
	}
	switch {
	case reflect.PointerTo(v.Type()).Implements(unmarshalerType):
		// Custom types (Duration) decode themselves.
	case v.Kind() == reflect.Struct:
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(data, &obj); err != nil {
			return pathError(path, errors.New("must be an object"))
		}
		fields := jsonFields(v.Type())
		for key, raw := range obj {
			idx, ok := fields[key]
			if !ok {
				return pathError(join(path, key), errors.New("unknown setting"))
			}
			if err := decodeValue(join(path, key), raw, v.Field(idx)); err != nil {
				return err
			}
		}
		return nil
	case v.Kind() == reflect.Slice:
		var items []json.RawMessage
		if err := json.Unmarshal(data, &items); err != nil {
			return pathError(path, errors.New("must be an array"))
		}
		s := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, raw := range items {
			if err := decodeValue(fmt.Sprintf("%s[%d]", path, i), raw, s.Index(i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	}
	if err := json.Unmarshal(data, v.Addr().Interface()); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			err = fmt.Errorf("must be %s, got %s", kindName(v.Kind()), te.Value)
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			err = errors.New("invalid JSON")
		}
		return pathError(path, err)
	}
	return nil
}

// jsonFields maps each exported field's json name to its index.
func jsonFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = i
	}
	return m
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	default:
		return "a " + k.String()
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func pathError(path string, err error) error {
	if path == "" {
		return err
	}
	return fmt.Errorf("%s: %w", path, err)
}
