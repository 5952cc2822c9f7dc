package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
)

// Direct method limits and defaults (https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-direct-methods).
const (
	// MaxMethodPayload bounds the request and the response payload of a direct method.
	MaxMethodPayload = 128 * 1024
	// DefaultResponseTimeout applies when a call gives none.
	DefaultResponseTimeout = 30 * time.Second
)

// MethodRequest is a direct method call.
type MethodRequest struct {
	DeviceID, ModuleID, Method string
	// Payload is the JSON payload; nil sends null.
	Payload json.RawMessage
	// ResponseTimeout is how long to wait for the device's answer (0 = 30 s). The REST API
	// enforces IoT Hub's 5..300 s; the Go API accepts any positive value so tests run fast.
	ResponseTimeout time.Duration
	// ConnectTimeout is how long to wait for the device to be connected and subscribed to
	// methods (0 = it must be already).
	ConnectTimeout time.Duration
}

// MethodResponse is the device's answer.
type MethodResponse struct {
	// Status is the status the device answered with.
	Status int
	// Payload is the device's JSON answer; null when it sent an empty body.
	Payload json.RawMessage
}

type methodReply struct {
	status  int
	payload []byte
	closed  bool // the connection closed before answering
}

// InvokeMethod calls a direct method as IoT Hub does: it publishes
// $iothub/methods/POST/{method}/?$rid={rid} to the identity's connection and waits for
// $iothub/methods/res/{status}/?$rid={rid}. Errors are *Error (404001/404010 unknown identity,
// 400004 bad arguments or request payload over 128 KB, 404103 not connected or not subscribed
// to $iothub/methods/POST/#, 504101 no answer in time, 413001 answer over 128 KB), ctx's
// error, or ErrClosed. Any number of calls may run concurrently.
func (h *Hub) InvokeMethod(ctx context.Context, req MethodRequest) (MethodResponse, error) {
	start := time.Now()
	resp, err := h.invoke(ctx, req)
	attrs := []any{"device", req.DeviceID, "module", req.ModuleID, "method", req.Method,
		"duration_ms", time.Since(start).Milliseconds()}
	if err != nil {
		h.log.Info("method invoked", append(attrs, "error", err.Error())...)
	} else {
		h.log.Info("method invoked", append(attrs, "status", resp.Status, "response_bytes", len(resp.Payload))...)
	}
	return resp, err
}

func (h *Hub) invoke(ctx context.Context, req MethodRequest) (MethodResponse, error) {
	id := registry.ID{Device: req.DeviceID, Module: req.ModuleID}
	if _, ok := h.cfg.Store.Lookup(id.Device, id.Module); !ok {
		return MethodResponse{}, errNotFound(id.Device, id.Module)
	}
	if req.Method == "" {
		return MethodResponse{}, errArgument("methodName is required")
	}
	payload := []byte(req.Payload)
	if len(bytes.TrimSpace(payload)) == 0 {
		payload = []byte("null")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, payload); err != nil {
		return MethodResponse{}, errArgument("payload is not valid JSON: %v", err)
	}
	if compact.Len() > MaxMethodPayload {
		// The message IoT Hub answered when the limit was 8 KB (Azure/azure-iot-sdks#1052).
		return MethodResponse{}, errArgument("'payload' size should be less than %d bytes.", MaxMethodPayload)
	}
	respTimeout := req.ResponseTimeout
	if respTimeout <= 0 {
		respTimeout = DefaultResponseTimeout
	}
	topic := "$iothub/methods/POST/" + req.Method + "/?$rid="

	c, err := h.route(ctx, id, topic, req.ConnectTimeout)
	if err != nil {
		return MethodResponse{}, err
	}
	// The call belongs to the connection it is sent on: only an answer on that connection
	// completes it, and it fails when that connection closes (edge-hub
	// Microsoft.Azure.Devices.Edge.Hub.Core/device/DeviceMessageHandler.cs, InvokeMethodAsync).
	rid := strconv.FormatUint(h.rid.Add(1), 10)
	ch := make(chan methodReply, 1)
	if !c.addCall(rid, ch) {
		return MethodResponse{}, errGatewayTimeout(respTimeout)
	}
	defer c.takeCall(rid)
	if !c.send(topic+rid, compact.Bytes()) {
		return MethodResponse{}, errGatewayTimeout(respTimeout)
	}

	timer := time.NewTimer(respTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.closed {
			return MethodResponse{}, errGatewayTimeout(respTimeout)
		}
		if len(r.payload) > MaxMethodPayload {
			// Not verified against IoT Hub, which documents the limit but not the error.
			return MethodResponse{}, errTooLarge("The method response payload is %d bytes; the limit is %d.", len(r.payload), MaxMethodPayload)
		}
		return MethodResponse{Status: r.status, Payload: responseJSON(r.payload)}, nil
	case <-timer.C:
		return MethodResponse{}, errGatewayTimeout(respTimeout)
	case <-ctx.Done():
		return MethodResponse{}, ctx.Err()
	case <-h.ctx.Done():
		return MethodResponse{}, ErrClosed
	}
}

// route returns the connection a method call goes to. A call that finds the identity
// connected without a subscription to topic is answered 404 at once: edgeHub's
// InvokeMethodHandler queues it for the call's connect timeout, and calls from the cloud
// carry 0 (edge-hub Microsoft.Azure.Devices.Edge.Hub.Core/InvokeMethodHandler.cs, InvokeMethod
// and GetDeviceProxyWithSubscription). A call that finds it not connected waits up to
// connectTimeout for a subscribed connection, as IoT Hub does for an offline device.
func (h *Hub) route(ctx context.Context, id registry.ID, topic string, connectTimeout time.Duration) (*conn, error) {
	deadline := time.Now().Add(connectTimeout)
	for first := true; ; first = false {
		h.mu.Lock()
		c := h.liveLocked(id)
		ch := h.changed
		h.mu.Unlock()
		if c != nil && c.subscribed(topic) {
			return c, nil
		}
		if c != nil && first {
			return nil, errNotOnline(0)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, errNotOnline(connectTimeout)
		}
		t := time.NewTimer(wait)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-h.ctx.Done():
			t.Stop()
			return nil, ErrClosed
		}
		t.Stop()
	}
}

// responseJSON turns a device's answer into the JSON IoT Hub returns as "payload": null for
// an empty body, the body itself when it is JSON, and otherwise the body as a JSON string
// (an emulator choice; IoT Hub's handling of non-JSON answers is not documented).
func responseJSON(b []byte) json.RawMessage {
	if len(bytes.TrimSpace(b)) == 0 {
		return json.RawMessage("null")
	}
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	s, _ := json.Marshal(string(b))
	return s
}

// methodResponse delivers a device's $iothub/methods/res/{status}/?$rid= to the waiting call.
func (h *Hub) methodResponse(c *conn, topic string, payload []byte) {
	status, err := methodStatus(topic)
	if err != nil {
		h.log.Warn("bad method response", "device", c.id.Device, "module", c.id.Module, "error", err)
		return
	}
	rid, err := requestID(topic)
	if err != nil {
		h.log.Warn("bad method response", "device", c.id.Device, "module", c.id.Module, "error", err)
		return
	}
	ch, ok := c.takeCall(rid)
	if !ok {
		// edgeHub drops answers to calls that timed out, never existed or were sent on
		// another connection: "No request found for method invoke response"
		// (edge-hub Microsoft.Azure.Devices.Edge.Hub.Core/device/DeviceMessageHandler.cs).
		h.log.Info("method response for no pending call", "device", c.id.Device, "module", c.id.Module, "rid", rid, "status", status)
		return
	}
	select {
	case ch <- methodReply{status: status, payload: payload}:
	default: // a duplicate answer; the first one won
	}
}
