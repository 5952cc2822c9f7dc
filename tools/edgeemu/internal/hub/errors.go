package hub

import (
	"errors"
	"fmt"
	"time"
)

// Error is an IoT Hub error: the HTTP status the service API answers, IoT Hub's numeric error
// code (e.g. 404103) and its name (e.g. "DeviceNotOnline").
type Error struct {
	Status  int
	Code    int
	Name    string
	Message string
	// Timeout is the timeout the error refers to (404103, 504101), reported by IoT Hub in the
	// error's "info".
	Timeout time.Duration
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("iothub: %d %s (%d): %s", e.Status, e.Name, e.Code, e.Message)
}

// IoT Hub error codes used by the emulator (https://learn.microsoft.com/rest/api/iothub/common-error-codes).
const (
	CodeArgumentInvalid    = 400004
	CodeUnauthorized       = 401002
	CodeDeviceNotFound     = 404001
	CodeModuleNotFound     = 404010
	CodeDeviceNotOnline    = 404103
	CodePreconditionFailed = 412001
	CodeMessageTooLarge    = 413001
	CodeGatewayTimeout     = 504101
)

// ErrClosed is returned by calls made while or after the hub closes.
var ErrClosed = errors.New("emulator closed")

func errArgument(format string, args ...any) *Error {
	return &Error{Status: 400, Code: CodeArgumentInvalid, Name: "ArgumentInvalid", Message: fmt.Sprintf(format, args...)}
}

func errNotFound(deviceID, moduleID string) *Error {
	if moduleID != "" {
		return &Error{Status: 404, Code: CodeModuleNotFound, Name: "ModuleNotFound",
			Message: fmt.Sprintf("Module %s on device %s not found", moduleID, deviceID)}
	}
	return &Error{Status: 404, Code: CodeDeviceNotFound, Name: "DeviceNotFound",
		Message: fmt.Sprintf("Device %s not registered", deviceID)}
}

func errNotOnline(timeout time.Duration) *Error {
	return &Error{Status: 404, Code: CodeDeviceNotOnline, Name: "DeviceNotOnline", Timeout: timeout,
		Message: "The operation failed because the requested device isn't online or hasn't registered the direct method callback. To learn more, see https://aka.ms/iothub404103"}
}

func errGatewayTimeout(timeout time.Duration) *Error {
	return &Error{Status: 504, Code: CodeGatewayTimeout, Name: "GatewayTimeout", Timeout: timeout,
		Message: "Timed out waiting for the response from device."}
}

func errTooLarge(format string, args ...any) *Error {
	return &Error{Status: 413, Code: CodeMessageTooLarge, Name: "MessageTooLarge", Message: fmt.Sprintf(format, args...)}
}

func errPrecondition() *Error {
	return &Error{Status: 412, Code: CodePreconditionFailed, Name: "PreconditionFailed",
		Message: "Precondition failed: the etag does not match the twin's current etag"}
}
