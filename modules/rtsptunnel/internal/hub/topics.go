package hub

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/identity"
)

// APIVersion is the IoT Hub MQTT API version the client announces in its
// user name.
const APIVersion = "2021-04-12"

// The MQTT side of IoT Hub's device API, as spoken by this package:
//
//	CONNECT   client id {device}/{module} (device identity: {device})
//	          username  {hub}/{device}[/{module}]/?api-version=2021-04-12&model-id={urlencoded dtmi}
//	          password  SAS token (identity.Token)
//	SUBSCRIBE $iothub/methods/POST/#, $iothub/twin/res/#, $iothub/twin/PATCH/properties/desired/#
//	          in one packet, QoS 1; a 0x80 return code for any of them fails the connection
//
//	hub → module                                           module → hub
//	$iothub/methods/POST/{name}/?$rid={rid}   (payload)    $iothub/methods/res/{status}/?$rid={rid}  (JSON)
//	$iothub/twin/res/{status}/?$rid={rid}[&$version={n}]   $iothub/twin/GET/?$rid={rid}              (empty)
//	$iothub/twin/PATCH/properties/desired/?$version={n}    $iothub/twin/PATCH/properties/reported/?$rid={rid} (JSON object)
//
// Twin answers: GET 200 {"desired":{..,"$version":n},"reported":{..,"$version":m}};
// PATCH reported 204 with $version in the topic, 400 for a bad document, 429 when throttled.
const (
	filterMethods = "$iothub/methods/POST/#"
	filterTwinRes = "$iothub/twin/res/#"
	filterDesired = "$iothub/twin/PATCH/properties/desired/#"

	prefixMethodPost = "$iothub/methods/POST/"
	prefixMethodRes  = "$iothub/methods/res/"
	prefixTwinRes    = "$iothub/twin/res/"
	topicTwinGet     = "$iothub/twin/GET/?$rid="
	topicTwinPatch   = "$iothub/twin/PATCH/properties/reported/?$rid="
)

// Limits IoT Hub enforces; we check them before sending so that an oversized
// message is a local error instead of a dropped connection.
const (
	maxMethodResponse = 128 << 10
	maxReported       = 32 << 10
)

// mqttUsername returns the documented username, with the model id that
// announces the IoT Plug and Play model (omitted when modelID is empty).
func mqttUsername(id *identity.Identity, modelID string) string {
	u := id.HubHostName + "/" + id.DeviceID
	if id.ModuleID != "" {
		u += "/" + id.ModuleID
	}
	u += "/?api-version=" + APIVersion
	if modelID != "" {
		u += "&model-id=" + url.QueryEscape(modelID)
	}
	return u
}

// topicQuery splits a topic into its path and its query parameters. Values
// are returned as sent (not unescaped): a $rid is echoed back verbatim.
func topicQuery(topic string) (string, map[string]string) {
	path, query, _ := strings.Cut(topic, "?")
	q := map[string]string{}
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := q[k]; !dup {
			q[k] = v
		}
	}
	return path, q
}

var errMalformedTopic = errors.New("malformed topic")

// parseMethodTopic parses $iothub/methods/POST/{name}/?$rid={rid}.
func parseMethodTopic(topic string) (name, rid string, err error) {
	path, q := topicQuery(topic)
	rest, ok := strings.CutPrefix(path, prefixMethodPost)
	name = strings.TrimSuffix(rest, "/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("%w: %q is not a method request", errMalformedTopic, topic)
	}
	if n, err := url.PathUnescape(name); err == nil {
		name = n
	}
	rid = q["$rid"]
	if rid == "" {
		return "", "", fmt.Errorf("%w: method request %q has no $rid", errMalformedTopic, topic)
	}
	return name, rid, nil
}

// parseTwinResponseTopic parses $iothub/twin/res/{status}/?$rid={rid}[&$version={n}].
func parseTwinResponseTopic(topic string) (status int, rid string, version int, err error) {
	path, q := topicQuery(topic)
	rest, ok := strings.CutPrefix(path, prefixTwinRes)
	if !ok {
		return 0, "", 0, fmt.Errorf("%w: %q is not a twin response", errMalformedTopic, topic)
	}
	status, err = strconv.Atoi(strings.TrimSuffix(rest, "/"))
	if err != nil {
		return 0, "", 0, fmt.Errorf("%w: twin response %q has no numeric status", errMalformedTopic, topic)
	}
	rid = q["$rid"]
	if rid == "" {
		return 0, "", 0, fmt.Errorf("%w: twin response %q has no $rid", errMalformedTopic, topic)
	}
	if v, ok := q["$version"]; ok {
		if version, err = strconv.Atoi(v); err != nil {
			return 0, "", 0, fmt.Errorf("%w: twin response %q has a bad $version", errMalformedTopic, topic)
		}
	}
	return status, rid, version, nil
}

// methodResponseTopic returns $iothub/methods/res/{status}/?$rid={rid}.
func methodResponseTopic(status int, rid string) string {
	return prefixMethodRes + strconv.Itoa(status) + "/?$rid=" + rid
}
