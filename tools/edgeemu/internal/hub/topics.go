package hub

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
)

// The MQTT topics of IoT Hub's device API (https://learn.microsoft.com/azure/iot/iot-mqtt-connect-to-iot-hub).
//
//	device → hub                                         hub → device
//	$iothub/methods/res/{status}/?$rid={rid}             $iothub/methods/POST/{name}/?$rid={rid}
//	$iothub/twin/GET/?$rid={rid}                         $iothub/twin/res/{status}/?$rid={rid}[&$version={n}]
//	$iothub/twin/PATCH/properties/reported/?$rid={rid}   $iothub/twin/PATCH/properties/desired/?$version={n}
//	devices/{d}[/modules/{m}]/messages/events/{props}    (telemetry, accepted and logged)
//
// A client may subscribe only to the filters in subscribeFilters and publish only to its own
// topics above; IoT Hub answers a forbidden subscription with SUBACK 0x80 and a forbidden
// publish by closing the connection.
const (
	filterMethods = "$iothub/methods/POST/#"
	filterTwinRes = "$iothub/twin/res/#"
	filterDesired = "$iothub/twin/PATCH/properties/desired/#"

	prefixMethodRes   = "$iothub/methods/res/"
	topicTwinGet      = "$iothub/twin/GET/"
	topicTwinReported = "$iothub/twin/PATCH/properties/reported/"
)

// username is a parsed MQTT username.
type username struct {
	hub, device, module string
	apiVersion, modelID string
	// nonstandard is set for forms IoT Hub tolerates but does not document: the legacy
	// "{hub}/{device}/api-version=..." without '?' (amenzhinsky/iothub's device transport) and a
	// username with no api-version at all.
	nonstandard bool
}

// parseUsername parses "{hub}/{device}[/{module}]/?api-version=..[&model-id=..][&..]".
func parseUsername(s string) (username, error) {
	var u username
	path, query, ok := strings.Cut(s, "?")
	if !ok {
		// Legacy form: the query follows the last path segment without '?'.
		if i := strings.Index(s, "/api-version="); i >= 0 {
			path, query = s[:i+1], s[i+1:]
		}
		u.nonstandard = true
	}
	parts := strings.Split(strings.TrimSuffix(path, "/"), "/")
	switch len(parts) {
	case 2:
		u.hub, u.device = parts[0], parts[1]
	case 3:
		u.hub, u.device, u.module = parts[0], parts[1], parts[2]
	default:
		return u, fmt.Errorf("username %q is not {hub}/{device}[/{module}]/?api-version=...", s)
	}
	if u.hub == "" || u.device == "" || (len(parts) == 3 && u.module == "") {
		return u, fmt.Errorf("username %q has an empty segment", s)
	}
	q := parseQuery(query)
	u.apiVersion = q["api-version"]
	u.modelID = q["model-id"]
	if u.apiVersion == "" {
		u.nonstandard = true
	}
	return u, nil
}

// parseQuery splits "a=b&c=d" leniently. url.ParseQuery is no use here: the Node SDK sends
// the model id unencoded, and "dtmi:...;1" contains a ';', which ParseQuery rejects.
func parseQuery(q string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(q, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		if _, dup := m[k]; !dup {
			m[k] = v
		}
	}
	return m
}

// splitTopic splits a topic into its path and the parsed query after '?'.
func splitTopic(topic string) (string, map[string]string) {
	path, query, _ := strings.Cut(topic, "?")
	return path, parseQuery(query)
}

// subscribeAllowed reports whether id may subscribe to filter.
func subscribeAllowed(id registry.ID, filter string) bool {
	switch filter {
	case filterMethods, filterTwinRes, filterDesired:
		return true
	}
	if id.Module == "" {
		return filter == "devices/"+id.Device+"/messages/devicebound/#"
	}
	base := "devices/" + id.Device + "/modules/" + id.Module + "/"
	// inputs/# is edgeHub's module input route; messages/devicebound/# is what
	// amenzhinsky/iothub's module transport subscribes to (nothing is ever delivered there).
	return filter == base+"inputs/#" || filter == base+"messages/devicebound/#"
}

// publishKind classifies a topic a client publishes to.
type publishKind int

const (
	pubForbidden publishKind = iota
	pubMethodResponse
	pubTwinGet
	pubTwinReported
	pubTelemetry
)

// classifyPublish reports what a publish by id to topic is, or pubForbidden.
func classifyPublish(id registry.ID, topic string) publishKind {
	path, _ := splitTopic(topic)
	switch {
	case strings.HasPrefix(path, prefixMethodRes):
		if _, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(path, prefixMethodRes), "/")); err == nil {
			return pubMethodResponse
		}
	case path == topicTwinGet || path+"/" == topicTwinGet:
		return pubTwinGet
	case path == topicTwinReported || path+"/" == topicTwinReported:
		return pubTwinReported
	}
	events := "devices/" + id.Device + "/messages/events"
	if id.Module != "" {
		events = "devices/" + id.Device + "/modules/" + id.Module + "/messages/events"
	}
	if path == events || strings.HasPrefix(path, events+"/") {
		return pubTelemetry
	}
	return pubForbidden
}

// methodStatus extracts the status from "$iothub/methods/res/{status}/".
func methodStatus(topic string) (int, error) {
	path, _ := splitTopic(topic)
	s := strings.TrimSuffix(strings.TrimPrefix(path, prefixMethodRes), "/")
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("method response topic %q has no numeric status: %w", topic, err)
	}
	return n, nil
}

// errNoRID is returned for requests without a $rid.
var errNoRID = errors.New("topic has no $rid")

func requestID(topic string) (string, error) {
	_, q := splitTopic(topic)
	rid, ok := q["$rid"]
	if !ok || rid == "" {
		return "", fmt.Errorf("%w: %q", errNoRID, topic)
	}
	return rid, nil
}

// topicMatch reports whether an MQTT topic filter matches a topic name.
func topicMatch(filter, topic string) bool {
	f := strings.Split(filter, "/")
	t := strings.Split(topic, "/")
	for i, seg := range f {
		if seg == "#" {
			return true
		}
		if i >= len(t) {
			return false
		}
		if seg != "+" && seg != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}
