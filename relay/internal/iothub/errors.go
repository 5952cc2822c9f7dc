package iothub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// IoT Hub error codes the relay cares about.
const (
	CodeDeviceNotOnline = 404103
	CodeGatewayTimeout  = 504101
)

var (
	// ErrDeviceNotOnline matches an [*Error] with error code 404103: the
	// device or module is not connected or not subscribed to methods.
	ErrDeviceNotOnline = errors.New("device or module not online")
	// ErrTimeout matches an [*Error] with error code 504101: the module did
	// not answer in time.
	ErrTimeout = errors.New("timed out waiting for the method response")
)

// maxBody bounds how much of an error body is kept.
const maxBody = 4 << 10

// Error is a non-200 answer of the IoT Hub REST API.
type Error struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// ErrorCode is IoT Hub's six-digit error code, 0 when the body had none.
	ErrorCode int
	// Message is the hub's message, when the body had one.
	Message string
	// Body is the response body, truncated to 4 KiB.
	Body string
}

// Error describes the answer by its status, error code and message when
// the body had them, else by the body itself.
func (e *Error) Error() string {
	s := fmt.Sprintf("IoT Hub answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	switch {
	case e.ErrorCode != 0:
		return fmt.Sprintf("%s (errorCode %d): %s", s, e.ErrorCode, e.Message)
	case e.Message != "":
		return s + ": " + e.Message
	case e.Body != "":
		return s + ": " + e.Body
	}
	return s
}

// ResponseBody returns the hub's response body (at most 4 KiB), for
// callers that log it without importing this package.
func (e *Error) ResponseBody() []byte { return []byte(e.Body) }

// HTTPStatus returns the HTTP status, for callers that label or log errors
// without importing this package.
func (e *Error) HTTPStatus() int { return e.StatusCode }

// DeviceNotOnline reports whether e is 404103: the device or module is not
// connected or not subscribed to methods, so the call never reached it and
// may be repeated (the relay's core retries it without importing this
// package).
func (e *Error) DeviceNotOnline() bool { return e.ErrorCode == CodeDeviceNotOnline }

// Is reports whether e matches ErrDeviceNotOnline or ErrTimeout.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrDeviceNotOnline:
		return e.ErrorCode == CodeDeviceNotOnline
	case ErrTimeout:
		return e.ErrorCode == CodeGatewayTimeout
	}
	return false
}

// newError builds an Error from a response status and body. IoT Hub sends
// either {"errorCode":404103,"message":".."} or, in the classic form, the
// same object JSON-encoded inside {"Message":"..","ExceptionMessage":".."}.
func newError(status int, body []byte) *Error {
	if len(body) > maxBody {
		body = body[:maxBody]
	}
	e := &Error{StatusCode: status, Body: string(bytes.TrimSpace(body))}
	e.ErrorCode, e.Message = parseErrorBody(body, 0)
	return e
}

func parseErrorBody(body []byte, depth int) (code int, msg string) {
	var m map[string]json.RawMessage
	if depth > 1 || json.Unmarshal(body, &m) != nil {
		return 0, ""
	}
	if raw, ok := m["errorCode"]; ok {
		code = jsonInt(raw)
		var s string
		json.Unmarshal(m["message"], &s)
		return code, s
	}
	var outer string
	if json.Unmarshal(m["Message"], &outer) != nil {
		return 0, ""
	}
	if code, msg = parseErrorBody([]byte(outer), depth+1); code != 0 {
		return code, msg
	}
	return 0, outer
}

func jsonInt(raw json.RawMessage) int {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return n
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		n, _ = strconv.Atoi(s)
	}
	return n
}
