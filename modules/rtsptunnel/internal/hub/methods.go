package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"runtime/debug"
	"strconv"
)

// MethodHandler answers one direct method call. payload is the request body
// exactly as IoT Hub delivered it (possibly empty, possibly not JSON: parse it
// yourself). body must be JSON; an empty body is sent as {}. Handlers run
// concurrently, each in its own goroutine, and may call the Client's twin
// methods. ctx is cancelled when Run returns. A panic is recovered and answered
// with 500 {"code":"500","message":"internal error"}.
type MethodHandler func(ctx context.Context, payload []byte) (status int, body []byte)

// MaxConcurrentMethods bounds the method handlers running at once; calls
// beyond it are answered 429 at once instead of queueing behind slow ones.
const MaxConcurrentMethods = 64

// errorBody returns the error shape of the original video service:
// {"code":"<status>","target":"<target>","message":"<message>"} (target omitted when empty).
func errorBody(status int, target, message string) []byte {
	b, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Target  string `json:"target,omitempty"`
		Message string `json:"message"`
	}{strconv.Itoa(status), target, message})
	return b
}

// internalErrorBody answers handler panics and invalid handler results.
var internalErrorBody = []byte(`{"code":"500","message":"internal error"}`)

// invoke runs the handler for method (nil when none is registered) and
// returns a status and a body that is always valid JSON within IoT Hub's
// size limit.
func invoke(ctx context.Context, log *slog.Logger, method string, h MethodHandler, payload []byte) (status int, body []byte) {
	if h == nil {
		// The SDK would leave the call unanswered (the caller waits for its
		// timeout); IoT Hub's own answer for this case is 404 too.
		return 404, errorBody(404, method, "method is not implemented")
	}
	defer func() {
		if r := recover(); r != nil {
			log.Error("method handler panicked", "method", method, "panic", r, "stack", string(debug.Stack()))
			status, body = 500, internalErrorBody
		}
	}()
	status, body = h(ctx, payload)
	switch {
	case status < 100 || status > 999:
		log.Error("method handler returned an invalid status", "method", method, "status", status)
		return 500, internalErrorBody
	case len(bytes.TrimSpace(body)) == 0:
		return status, []byte("{}")
	case !json.Valid(body):
		log.Error("method handler returned a body that is not JSON", "method", method, "status", status)
		return 500, internalErrorBody
	case len(body) > maxMethodResponse:
		log.Error("method handler returned a body over 128 KB", "method", method, "status", status, "bytes", len(body))
		return 500, errorBody(500, method, "method response exceeds 128 KB")
	}
	return status, body
}
