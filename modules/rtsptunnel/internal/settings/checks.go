package settings

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
)

// checks are the validations named by `check` tags.
var checks = map[string]func(reflect.Value) error{
	"targets":     checkTargets,
	"hostPattern": checkHostPatterns,
	"caFile":      checkCAFile,
	"listenAddr":  checkListenAddr,
}

func checkTargets(v reflect.Value) error {
	for port, addr := range v.Interface().(Targets) {
		if port < 1 || port > 65535 {
			return fmt.Errorf("port %d is out of range; expected ports from 1 to 65535", port)
		}
		if err := checkHostPort(addr); err != nil {
			return fmt.Errorf("camera for port %d: %w", port, err)
		}
	}
	return nil
}

// checkHostPort accepts "host:port" with a plausible host and a port 1..65535.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s is not host:port", shorten(addr))
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%s has an invalid port; expected 1 to 65535", shorten(addr))
	}
	if !ValidHostName(host) {
		return fmt.Errorf("%s has an invalid host", shorten(addr))
	}
	return nil
}

func checkHostPatterns(v reflect.Value) error {
	for _, p := range v.Interface().([]string) {
		if !ValidHostName(strings.TrimPrefix(p, "*.")) {
			return fmt.Errorf("%s is not a host name or *.suffix pattern", shorten(p))
		}
	}
	return nil
}

// ValidHostName reports whether h is an IP address or an ASCII DNS name
// (letters, digits, '-', '_' and dots, labels of 1..63 bytes; punycode for
// international names). Used for settings and for tunnelOpen endpoints alike.
func ValidHostName(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return false
			}
		}
	}
	return true
}

func checkCAFile(v reflect.Value) error {
	if v.String() == "" {
		return nil
	}
	_, err := Settings{RemoteCAFile: v.String()}.RemoteRootCAs()
	return err
}

func checkListenAddr(v reflect.Value) error {
	addr := v.String()
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s is not [host]:port", shorten(addr))
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%s has an invalid port", shorten(addr))
	}
	if host != "" && !ValidHostName(host) {
		return fmt.Errorf("%s has an invalid host", shorten(addr))
	}
	return nil
}

// MatchHost reports whether host (a URL's host name, without port) is allowed by
// patterns: an exact case-insensitive match, or "*.suffix" matching any name
// ending in ".suffix" (not "suffix" itself). An empty list allows every host.
func MatchHost(patterns []string, host string) bool {
	if len(patterns) == 0 {
		return true
	}
	if NamesHost(patterns, host) {
		return true // also matches IP addresses written differently ("0:0::1" and "::1")
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, p := range patterns {
		p = strings.ToLower(p)
		if suffix, ok := strings.CutPrefix(p, "*"); ok {
			if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
				return true
			}
		} else if host == p {
			return true
		}
	}
	return false
}

// NamesHost reports whether patterns name host exactly: an entry equal to host
// (case-insensitive, trailing dot ignored; IP addresses compared as addresses,
// so "::1" names "0:0::1"). Wildcards do not count: a loopback, link-local or
// metadata address is reached only through a host the operator wrote out.
func NamesHost(patterns []string, host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	hostIP, hostErr := netip.ParseAddr(host)
	for _, p := range patterns {
		p = strings.TrimSuffix(strings.ToLower(p), ".")
		if strings.HasPrefix(p, "*") {
			continue
		}
		if p == host {
			return true
		}
		if ip, err := netip.ParseAddr(p); err == nil && hostErr == nil && ip == hostIP {
			return true
		}
	}
	return false
}
