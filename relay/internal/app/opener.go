package app

import (
	"context"
	"errors"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/core"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/iothub"
	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
)

// MethodName is the direct method the module serves.
const MethodName = "tunnelOpen"

// tunnelOpenPayload is the method's payload (DESIGN.md section 3).
type tunnelOpenPayload struct {
	RemoteEndpoint           string `json:"remoteEndpoint"`
	RemoteAuthorizationToken string `json:"remoteAuthorizationToken"`
	LocalPort                int    `json:"localPort"`
}

// target is where a camera's tunnelOpen goes.
type target struct {
	client    *iothub.Client
	deviceID  string
	moduleID  string
	localPort int
}

// hubOpener implements core.Opener with IoT Hub direct methods and counts
// relay_method_calls_total.
type hubOpener struct {
	targets         map[string]target // static
	responseTimeout time.Duration
	metrics         *metrics.Metrics
}

func (h *hubOpener) OpenTunnel(ctx context.Context, camera string, req core.OpenRequest) (core.OpenResult, error) {
	t, ok := h.targets[camera]
	if !ok {
		return core.OpenResult{}, errors.New("unknown camera " + camera)
	}
	resp, err := t.client.InvokeMethod(ctx, t.deviceID, t.moduleID, iothub.MethodRequest{
		MethodName: MethodName,
		Payload: tunnelOpenPayload{
			RemoteEndpoint:           req.Endpoint,
			RemoteAuthorizationToken: req.Token,
			LocalPort:                t.localPort,
		},
		ResponseTimeoutInSeconds: int((h.responseTimeout + time.Second - 1) / time.Second),
		ConnectTimeoutInSeconds:  0,
	})
	if err != nil {
		status := 0
		var he *iothub.Error
		if errors.As(err, &he) {
			status = he.StatusCode
		}
		h.metrics.MethodCalls.WithLabelValues(metrics.MethodStatus(status, 0)).Inc()
		return core.OpenResult{}, err
	}
	h.metrics.MethodCalls.WithLabelValues(metrics.MethodStatus(200, resp.Status)).Inc()
	return core.OpenResult{Status: resp.Status, Body: resp.Payload}, nil
}
