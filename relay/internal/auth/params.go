package auth

import (
	"errors"
	"fmt"
	"strings"
)

// Bounds on what the parser accepts; real Authorization headers are a few
// hundred bytes with under a dozen parameters.
const (
	maxHeaderLen = 8 << 10
	maxParams    = 32
)

// splitScheme splits "Scheme rest" at the first space or tab, ignoring
// surrounding whitespace.
func splitScheme(h string) (scheme, rest string) {
	h = strings.Trim(h, " \t")
	i := strings.IndexAny(h, " \t")
	if i < 0 {
		return h, ""
	}
	return h[:i], strings.TrimLeft(h[i:], " \t")
}

// parseParams parses an auth-param list (RFC 7235 section 2.1):
//
//	name = value , name = "quoted \"value\"" , ...
//
// Names are folded to lower case. Values are tokens or quoted-strings with
// backslash escapes; an unquoted value runs to the next comma or
// whitespace. Empty list elements and whitespace around '=' and ',' are
// tolerated, as clients differ. Duplicate names are an error: which one
// would count is exactly the kind of ambiguity an attacker looks for.
// Errors never quote the header, which may come from a confused client
// that put a password in it.
func parseParams(s string) (map[string]string, error) {
	if len(s) > maxHeaderLen {
		return nil, errors.New("header too long")
	}
	params := make(map[string]string, 8)
	i := 0
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
	}
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == ',') {
			i++
		}
		if i >= len(s) {
			return params, nil
		}
		start := i
		for i < len(s) && isTokenChar(s[i]) {
			i++
		}
		if i == start {
			return nil, fmt.Errorf("unexpected character at offset %d", i)
		}
		name := strings.ToLower(s[start:i])
		skipSpace()
		if i >= len(s) || s[i] != '=' {
			return nil, fmt.Errorf("%s has no value", paramLabel(name))
		}
		i++
		skipSpace()
		var value string
		if i < len(s) && s[i] == '"' {
			i++
			var b strings.Builder
			for {
				if i >= len(s) {
					return nil, fmt.Errorf("%s: unterminated quoted string", paramLabel(name))
				}
				c := s[i]
				i++
				if c == '"' {
					break
				}
				if c == '\\' {
					if i >= len(s) {
						return nil, fmt.Errorf("%s: unterminated quoted string", paramLabel(name))
					}
					c = s[i]
					i++
				}
				b.WriteByte(c)
			}
			value = b.String()
		} else {
			start := i
			for i < len(s) && s[i] != ',' && s[i] != ' ' && s[i] != '\t' && s[i] != '"' {
				i++
			}
			value = s[start:i]
		}
		if _, dup := params[name]; dup {
			return nil, fmt.Errorf("%s given twice", paramLabel(name))
		}
		if len(params) == maxParams {
			return nil, errors.New("too many parameters")
		}
		params[name] = value
		skipSpace()
		if i < len(s) && s[i] != ',' {
			return nil, fmt.Errorf("%s: expected ',' after the value", paramLabel(name))
		}
	}
}

// paramLabel names a parameter in an error message: known names verbatim,
// anything else generically, since a confused client may have put a secret
// where a name should be.
func paramLabel(name string) string {
	switch name {
	case "username", "realm", "nonce", "uri", "response", "algorithm", "qop",
		"nc", "cnonce", "opaque", "userhash", "username*":
		return `parameter "` + name + `"`
	}
	return "a parameter"
}

// isTokenChar reports whether c is an RFC 7230 tchar.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
