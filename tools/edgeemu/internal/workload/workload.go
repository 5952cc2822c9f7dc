// Package workload serves the IoT Edge workload API a module uses to sign its SAS tokens and to
// fetch the CA that edgeHub's certificate chains to. It is served over HTTP on a unix socket
// (IOTEDGE_WORKLOADURI=unix:///...):
//
//	POST /modules/{moduleId}/genid/{generationId}/sign?api-version=..
//	     {"keyId":"primary","algo":"HMACSHA256","data":"<base64>"} → 200 {"digest":"<base64 HMAC-SHA256>"}
//	GET  /trust-bundle?api-version=..                            → 200 {"certificate":"<PEM>"}
//
// Errors answer {"message":"..."}: 404 for an unknown module or generation id, 400 for a bad
// body or api-version. Unlike the real daemon the emulator does not check which process is
// calling (iotedged compares the caller's pid with the module's container).
package workload

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/sas"
)

// APIVersions are the workload API versions IoT Edge 1.1–1.5 understand.
var APIVersions = []string{"2018-06-28", "2019-01-30", "2019-10-22", "2019-11-05", "2020-07-07", "2021-12-07", "2022-08-03"}

// Config configures the handler.
type Config struct {
	// Store holds the modules and their keys.
	Store *registry.Store
	// TrustBundle is the PEM the trust-bundle call returns.
	TrustBundle []byte
	// Logger receives sign calls and refusals.
	Logger *slog.Logger
}

// Handler returns the workload API handler.
func Handler(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /modules/{module}/genid/{genid}/sign", func(w http.ResponseWriter, r *http.Request) {
		if !apiVersionOK(w, r) {
			return
		}
		module, genid := r.PathValue("module"), r.PathValue("genid")
		id, ok := cfg.Store.FindModule(module, genid)
		if !ok {
			msg := fmt.Sprintf("Module not found: %s", module)
			if cfg.Store.HasModule(module) {
				msg = fmt.Sprintf("Module %s has no generation %s", module, genid)
			}
			cfg.Logger.Info("workload sign refused", "module", module, "generation_id", genid, "reason", msg)
			writeError(w, http.StatusNotFound, msg)
			return
		}
		var req struct {
			KeyID string `json:"keyId"`
			Algo  string `json:"algo"`
			Data  string `json:"data"`
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid sign request: %v", err))
			return
		}
		if req.KeyID != "primary" && req.KeyID != "secondary" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid keyId %q: expected primary or secondary", req.KeyID))
			return
		}
		if req.Algo != "HMACSHA256" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid algo %q: expected HMACSHA256", req.Algo))
			return
		}
		data, err := base64.StdEncoding.DecodeString(req.Data)
		if err != nil || req.Data == "" {
			writeError(w, http.StatusBadRequest, "Invalid data: expected non-empty base64")
			return
		}
		// Modules have one key here; "secondary" signs with it too.
		cfg.Logger.Debug("workload sign", "device", id.DeviceID, "module", module)
		writeJSON(w, http.StatusOK, map[string]string{"digest": sas.Sign(id.Key, data)})
	})
	mux.HandleFunc("GET /trust-bundle", func(w http.ResponseWriter, r *http.Request) {
		if !apiVersionOK(w, r) {
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"certificate": string(cfg.TrustBundle)})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("%s %s is not a workload API call of this emulator", r.Method, r.URL.Path))
	})
	return mux
}

func apiVersionOK(w http.ResponseWriter, r *http.Request) bool {
	v := r.URL.Query().Get("api-version")
	if !slices.Contains(APIVersions, v) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid API version %q", v))
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
