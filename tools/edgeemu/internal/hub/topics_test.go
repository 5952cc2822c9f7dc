package hub

import (
	"testing"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
)

func TestParseUsername(t *testing.T) {
	tests := []struct {
		in      string
		want    username
		wantErr bool
	}{
		{in: "h/d/m/?api-version=2021-04-12&model-id=dtmi%3Aa%3Bb%3B1", want: username{hub: "h", device: "d", module: "m", apiVersion: "2021-04-12", modelID: "dtmi:a;b;1"}},
		{in: "h/d/?api-version=2021-04-12&model-id=dtmi:a:b;1&DeviceClientType=x%2F1", want: username{hub: "h", device: "d", apiVersion: "2021-04-12", modelID: "dtmi:a:b;1"}},
		{in: "h/d/api-version=2020-09-30&model-id=dtmi%3Ax%3B1", want: username{hub: "h", device: "d", apiVersion: "2020-09-30", modelID: "dtmi:x;1", nonstandard: true}},
		{in: "h/d", want: username{hub: "h", device: "d", nonstandard: true}},
		{in: "h/d/m/?", want: username{hub: "h", device: "d", module: "m", nonstandard: true}},
		{in: "h", wantErr: true},
		{in: "h/d/m/x/?api-version=1", wantErr: true},
		{in: "/d/?api-version=1", wantErr: true},
		{in: "h//m/?api-version=1", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseUsername(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("%q: err = %v", tt.in, err)
			continue
		}
		if !tt.wantErr && got != tt.want {
			t.Errorf("%q = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestClassifyPublish(t *testing.T) {
	mod := registry.ID{Device: "d", Module: "m"}
	dev := registry.ID{Device: "d"}
	tests := []struct {
		id    registry.ID
		topic string
		want  publishKind
	}{
		{mod, "$iothub/methods/res/200/?$rid=1", pubMethodResponse},
		{mod, "$iothub/methods/res/abc/?$rid=1", pubForbidden},
		{mod, "$iothub/twin/GET/?$rid=1", pubTwinGet},
		{mod, "$iothub/twin/PATCH/properties/reported/?$rid=1", pubTwinReported},
		{mod, "$iothub/twin/PATCH/properties/desired/?$rid=1", pubForbidden},
		{mod, "devices/d/modules/m/messages/events/", pubTelemetry},
		{mod, "devices/d/modules/m/messages/events/%24.ct=application%2Fjson", pubTelemetry},
		{mod, "devices/d/messages/events/", pubForbidden},
		{dev, "devices/d/messages/events/", pubTelemetry},
		{dev, "devices/d/messages/eventsX", pubForbidden},
		{dev, "devices/e/messages/events/", pubForbidden},
	}
	for _, tt := range tests {
		if got := classifyPublish(tt.id, tt.topic); got != tt.want {
			t.Errorf("%v %q = %v, want %v", tt.id, tt.topic, got, tt.want)
		}
	}
}

func TestTopicMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"$iothub/methods/POST/#", "$iothub/methods/POST/tunnelOpen/?$rid=1", true},
		{"$iothub/twin/res/#", "$iothub/twin/res/204/?$rid=1&$version=2", true},
		{"$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/?$version=2", false},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
	}
	for _, tt := range tests {
		if got := topicMatch(tt.filter, tt.topic); got != tt.want {
			t.Errorf("topicMatch(%q, %q) = %v", tt.filter, tt.topic, got)
		}
	}
}
