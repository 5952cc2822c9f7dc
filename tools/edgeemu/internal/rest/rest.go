// Package rest serves the IoT Hub service REST API the relay and the official service SDKs
// call: direct method invocation and twin read/update, with IoT Hub's paths, authorization,
// JSON shapes and error bodies.
//
//	POST  /twins/{deviceId}/methods?api-version=..                  invoke a device method
//	POST  /twins/{deviceId}/modules/{moduleId}/methods?api-version=..
//	GET   /twins/{deviceId}[/modules/{moduleId}]?api-version=..     read a twin
//	PATCH /twins/{deviceId}[/modules/{moduleId}]?api-version=..     update desired properties / tags (If-Match)
//
// Authorization: "SharedAccessSignature sr={hub}&sig=..&se=..&skn={policy}" signed with a
// shared access policy key, or "Bearer <token>" for a token the emulator was told to trust.
// Anything else is 401.
package rest

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/hub"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/sas"
)

// maxBody bounds a request body: a 128 KB method payload plus its envelope, with room to spare.
const maxBody = 1 << 20

// Method timeout ranges IoT Hub enforces, in seconds.
const (
	minResponseTimeout = 5
	maxResponseTimeout = 300
	maxConnectTimeout  = 300
)

// Config configures the handler.
type Config struct {
	// HubHostName is the hub name service tokens must be issued for.
	HubHostName string
	// Hub executes the operations.
	Hub *hub.Hub
	// Store provides the shared access policies.
	Store *registry.Store
	// TrustedBearerTokens are accepted as "Authorization: Bearer <token>" (standing in for
	// Microsoft Entra ID tokens, which the emulator cannot validate).
	TrustedBearerTokens []string
	// Logger receives refused requests.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

type handler struct {
	cfg Config
	mux *http.ServeMux
}

// Handler returns the REST API handler.
func Handler(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("POST /twins/{device}/methods", h.invoke)
	h.mux.HandleFunc("POST /twins/{device}/modules/{module}/methods", h.invoke)
	h.mux.HandleFunc("GET /twins/{device}", h.getTwin)
	h.mux.HandleFunc("GET /twins/{device}/modules/{module}", h.getTwin)
	h.mux.HandleFunc("PATCH /twins/{device}", h.patchTwin)
	h.mux.HandleFunc("PATCH /twins/{device}/modules/{module}", h.patchTwin)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.authorize(r); err != nil {
		h.cfg.Logger.Info("service request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err.Error())
		writeError(w, &hub.Error{Status: 401, Code: hub.CodeUnauthorized, Name: "IotHubUnauthorizedAccess", Message: "Unauthorized"})
		return
	}
	if _, pattern := h.mux.Handler(r); pattern == "" {
		writeError(w, &hub.Error{Status: 404, Code: 404000, Name: "NotFound", Message: fmt.Sprintf("%s %s is not an operation of this emulator", r.Method, r.URL.Path)})
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		writeError(w, &hub.Error{Status: 400, Code: 400001, Name: "InvalidProtocolVersion", Message: "The api-version query parameter is required."})
		return
	}
	h.mux.ServeHTTP(w, r)
}

// authorize checks the Authorization header.
func (h *handler) authorize(r *http.Request) error {
	auth := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(auth, "Bearer "); ok {
		for _, t := range h.cfg.TrustedBearerTokens {
			if t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
				return nil
			}
		}
		return errors.New("bearer token is not trusted")
	}
	if auth == "" {
		return errors.New("no Authorization header")
	}
	t, err := sas.Parse(auth)
	if err != nil {
		return err
	}
	if t.KeyName == "" {
		return errors.New("token has no skn (policy name)")
	}
	p, ok := h.cfg.Store.Policy(t.KeyName)
	if !ok {
		return fmt.Errorf("policy %q does not exist", t.KeyName)
	}
	if !strings.EqualFold(strings.TrimSuffix(t.Resource, "/"), h.cfg.HubHostName) {
		return fmt.Errorf("token resource %q is not the hub %q", t.Resource, h.cfg.HubHostName)
	}
	if !t.Verify(p.Key) {
		return errors.New("token signature does not match the policy key")
	}
	if !t.Expiry.After(h.cfg.Now()) {
		return fmt.Errorf("token expired at %s", t.Expiry.UTC().Format(time.RFC3339))
	}
	return nil
}

// methodRequest is IoT Hub's CloudToDeviceMethod.
type methodRequest struct {
	MethodName               string          `json:"methodName"`
	Payload                  json.RawMessage `json:"payload"`
	ResponseTimeoutInSeconds *int            `json:"responseTimeoutInSeconds"`
	ConnectTimeoutInSeconds  *int            `json:"connectTimeoutInSeconds"`
}

func (h *handler) invoke(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req methodRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, argErr("The request body is not a valid CloudToDeviceMethod: %v", err))
		return
	}
	resp, conn := 30, 0
	if p := req.ResponseTimeoutInSeconds; p != nil {
		resp = *p
	}
	if p := req.ConnectTimeoutInSeconds; p != nil {
		conn = *p
	}
	if resp < minResponseTimeout || resp > maxResponseTimeout {
		writeError(w, argErr("responseTimeoutInSeconds must be between %d and %d seconds", minResponseTimeout, maxResponseTimeout))
		return
	}
	if conn < 0 || conn > maxConnectTimeout {
		writeError(w, argErr("connectTimeoutInSeconds must be between 0 and %d seconds", maxConnectTimeout))
		return
	}
	res, err := h.cfg.Hub.InvokeMethod(r.Context(), hub.MethodRequest{
		DeviceID:        r.PathValue("device"),
		ModuleID:        r.PathValue("module"),
		Method:          req.MethodName,
		Payload:         req.Payload,
		ResponseTimeout: time.Duration(resp) * time.Second,
		ConnectTimeout:  time.Duration(conn) * time.Second,
	})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return // the caller went away
		}
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": res.Status, "payload": res.Payload})
}

func (h *handler) getTwin(w http.ResponseWriter, r *http.Request) {
	b, err := h.cfg.Hub.ServiceTwin(registry.ID{Device: r.PathValue("device"), Module: r.PathValue("module")})
	if err != nil {
		writeError(w, err)
		return
	}
	writeRaw(w, http.StatusOK, b)
}

func (h *handler) patchTwin(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		writeError(w, err)
		return
	}
	id := registry.ID{Device: r.PathValue("device"), Module: r.PathValue("module")}
	b, err := h.cfg.Hub.PatchTwin(id, body, r.Header.Get("If-Match"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeRaw(w, http.StatusOK, b)
}

func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, argErr("failed to read the request body: %v", err)
	}
	if len(b) > maxBody {
		return nil, &hub.Error{Status: 413, Code: hub.CodeMessageTooLarge, Name: "MessageTooLarge", Message: "The request body is too large."}
	}
	return b, nil
}

func argErr(format string, args ...any) *hub.Error {
	return &hub.Error{Status: 400, Code: hub.CodeArgumentInvalid, Name: "ArgumentInvalid", Message: fmt.Sprintf(format, args...)}
}

// writeError renders err as IoT Hub does. Method-invocation failures (404103, 504101) use the
// newer envelope, a JSON document inside "Message"; everything else the classic
// "ErrorCode:{name};{message}" form that the SDKs' error parsers split on ';'. Both carry the
// iothub-errorcode header.
func writeError(w http.ResponseWriter, err error) {
	var he *hub.Error
	if !errors.As(err, &he) {
		he = &hub.Error{Status: 500, Code: 500001, Name: "ServerError", Message: err.Error()}
	}
	track := trackingID()
	now := time.Now().UTC()
	var msg string
	switch he.Code {
	case hub.CodeDeviceNotOnline, hub.CodeGatewayTimeout:
		inner, _ := json.Marshal(map[string]any{
			"errorCode":    he.Code,
			"trackingId":   track,
			"message":      he.Message,
			"info":         map[string]string{"timeout": clock(he.Timeout)},
			"timestampUtc": now.Format(time.RFC3339Nano),
		})
		msg = string(inner)
		w.Header().Set("iothub-errorcode", he.Name)
		writeJSON(w, he.Status, map[string]string{"Message": msg, "ExceptionMessage": ""})
		return
	default:
		msg = "ErrorCode:" + he.Name + ";" + he.Message
	}
	w.Header().Set("iothub-errorcode", he.Name)
	writeJSON(w, he.Status, map[string]string{
		"Message":          msg,
		"ExceptionMessage": "Tracking ID:" + track + "-G:0-TimeStamp:" + now.Format("01/02/2006 15:04:05"),
	})
}

// clock formats d as .NET's TimeSpan does ("00:00:30").
func clock(d time.Duration) string {
	s := int64(d / time.Second)
	return fmt.Sprintf("%02d:%02d:%02d", s/3600, s/60%60, s%60)
}

func trackingID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
