package hub

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/twin"
)

// twinGet answers $iothub/twin/GET/?$rid= with the device's view of the twin.
func (h *Hub) twinGet(c *conn, topic string) {
	rid, err := requestID(topic)
	if err != nil {
		h.log.Warn("bad twin request", "device", c.id.Device, "module", c.id.Module, "error", err)
		return
	}
	var body []byte
	err = h.cfg.Store.ReadTwin(c.id, func(t *twin.Twin) {
		body, err = json.Marshal(map[string]any{
			"desired":  t.Desired.DeviceView(),
			"reported": t.Reported.DeviceView(),
		})
	})
	if err != nil {
		h.twinRespond(c, rid, 500, errorBody(500000, "InternalServerError", err.Error()), 0)
		return
	}
	h.twinRespond(c, rid, 200, body, 0)
}

// twinReported applies $iothub/twin/PATCH/properties/reported/?$rid= and answers 204 with the
// new $version, or 400 (bad JSON, not an object, bad key, too deep) or 413 (over 32 KB).
func (h *Hub) twinReported(c *conn, topic string, payload []byte) {
	rid, err := requestID(topic)
	if err != nil {
		h.log.Warn("bad twin request", "device", c.id.Device, "module", c.id.Module, "error", err)
		return
	}
	patch, err := twin.DecodePatch(payload)
	if err == nil {
		err = twin.Validate(patch)
	}
	var version int64
	if err == nil {
		err = h.cfg.Store.UpdateTwin(c.id, func(t *twin.Twin) error {
			if err := t.Reported.Apply(patch, h.cfg.Now(), false); err != nil {
				return err
			}
			t.Version++
			version = t.Reported.Version
			return nil
		})
	}
	if err != nil {
		status, code, name := 400, CodeArgumentInvalid, "ArgumentInvalid"
		switch {
		case errors.Is(err, twin.ErrTooLarge):
			status, code, name = 413, CodeMessageTooLarge, "MessageTooLarge"
		case !errors.Is(err, twin.ErrInvalid):
			status, code, name = 500, 500000, "InternalServerError"
		}
		h.log.Info("twin reported patch refused", "device", c.id.Device, "module", c.id.Module, "status", status, "error", err.Error())
		h.twinRespond(c, rid, status, errorBody(code, name, err.Error()), 0)
		return
	}
	h.log.Info("twin reported patched", "device", c.id.Device, "module", c.id.Module, "version", version, "bytes", len(payload))
	h.notify()
	h.twinRespond(c, rid, 204, nil, version)
}

func (h *Hub) twinRespond(c *conn, rid string, status int, body []byte, version int64) {
	topic := fmt.Sprintf("$iothub/twin/res/%d/?$rid=%s", status, rid)
	if version > 0 {
		topic += fmt.Sprintf("&$version=%d", version)
	}
	if !c.subscribed(topic) {
		// IoT Hub only answers clients subscribed to $iothub/twin/res/#.
		h.log.Warn("twin response dropped: client not subscribed to "+filterTwinRes, "device", c.id.Device, "module", c.id.Module)
		return
	}
	c.send(topic, body)
}

// errorBody is the JSON body of a failed twin operation on MQTT. IoT Hub's exact body is not
// documented; this is its REST error shape.
func errorBody(code int, name, msg string) []byte {
	b, _ := json.Marshal(map[string]any{"errorCode": code, "errorName": name, "message": msg})
	return b
}

// DeviceTwin returns the desired and reported sections as the device sees them (with
// $version, without $metadata).
func (h *Hub) DeviceTwin(id registry.ID) (desired, reported json.RawMessage, err error) {
	err = h.cfg.Store.ReadTwin(id, func(t *twin.Twin) {
		desired, err = json.Marshal(t.Desired.DeviceView())
		if err == nil {
			reported, err = json.Marshal(t.Reported.DeviceView())
		}
	})
	if errors.Is(err, registry.ErrNotFound) {
		return nil, nil, errNotFound(id.Device, id.Module)
	}
	return desired, reported, err
}

// PatchDesired merges patch into the desired properties and, when the identity is connected
// and subscribed to $iothub/twin/PATCH/properties/desired/#, pushes the patch with its new
// $version. It returns the new desired $version.
func (h *Hub) PatchDesired(id registry.ID, patch json.RawMessage) (int64, error) {
	p, err := twin.DecodePatch(patch)
	if err == nil {
		err = twin.Validate(p)
	}
	if err != nil {
		return 0, errArgument("%v", err)
	}
	return h.patch(id, p, nil, "")
}

// patch applies a desired and/or tags patch (with an If-Match etag check unless ifMatch is
// empty or "*") and pushes the desired part to the device.
func (h *Hub) patch(id registry.ID, desired, tags map[string]any, ifMatch string) (int64, error) {
	// Held across the update and the push so concurrent patches reach the device in version order.
	h.desiredMu.Lock()
	defer h.desiredMu.Unlock()
	var version int64
	err := h.cfg.Store.UpdateTwin(id, func(t *twin.Twin) error {
		if ifMatch != "" && ifMatch != "*" && ifMatch != etag(t.Version) {
			return errPrecondition()
		}
		if len(desired) > 0 {
			if err := t.Desired.Apply(desired, h.cfg.Now(), true); err != nil {
				return err
			}
		}
		if len(tags) > 0 {
			t.MergeTags(tags)
		}
		if len(desired) > 0 || len(tags) > 0 {
			t.Version++
		}
		version = t.Desired.Version
		return nil
	})
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return 0, errNotFound(id.Device, id.Module)
	case errors.Is(err, twin.ErrTooLarge):
		return 0, errTooLarge("%v", err)
	case err != nil:
		return 0, err
	}
	if len(desired) == 0 {
		return version, nil
	}
	h.log.Info("twin desired patched", "device", id.Device, "module", id.Module, "version", version)
	h.notify()

	topic := fmt.Sprintf("$iothub/twin/PATCH/properties/desired/?$version=%d", version)
	h.mu.Lock()
	c := h.liveLocked(id)
	lost := c != nil && h.lose[id] > 0
	if lost {
		h.lose[id]--
	}
	h.mu.Unlock()
	if c == nil || !c.subscribed(topic) || lost {
		return version, nil // not replayed later, as with IoT Hub: the device must GET the twin
	}
	body := make(map[string]any, len(desired)+1)
	for k, v := range desired {
		body[k] = v
	}
	body["$version"] = version
	b, err := json.Marshal(body)
	if err != nil {
		return version, fmt.Errorf("failed to encode desired patch: %w", err)
	}
	if c.send(topic, b) {
		h.log.Info("desired properties pushed", "device", id.Device, "module", id.Module, "version", version)
	}
	return version, nil
}

// etag renders a twin version the way IoT Hub's etags look (base64 of a big-endian int64).
func etag(v int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	return base64.StdEncoding.EncodeToString(b[:])
}

// serviceTwin is the twin as the service REST API returns it.
type serviceTwin struct {
	DeviceID                  string          `json:"deviceId"`
	ModuleID                  string          `json:"moduleId,omitempty"`
	Etag                      string          `json:"etag"`
	DeviceEtag                string          `json:"deviceEtag"`
	Status                    string          `json:"status"`
	StatusUpdateTime          string          `json:"statusUpdateTime"`
	ConnectionState           string          `json:"connectionState"`
	LastActivityTime          string          `json:"lastActivityTime"`
	CloudToDeviceMessageCount int             `json:"cloudToDeviceMessageCount"`
	AuthenticationType        string          `json:"authenticationType"`
	X509Thumbprint            map[string]any  `json:"x509Thumbprint"`
	ModelID                   string          `json:"modelId"`
	Version                   int64           `json:"version"`
	Tags                      map[string]any  `json:"tags,omitempty"`
	Properties                map[string]any  `json:"properties"`
	Capabilities              map[string]bool `json:"capabilities,omitempty"`
}

// ServiceTwin returns the twin JSON the service API's GET /twins/{d}[/modules/{m}] answers.
func (h *Hub) ServiceTwin(id registry.ID) ([]byte, error) {
	info, _ := h.Info(id)
	st := serviceTwin{
		DeviceID:           id.Device,
		ModuleID:           id.Module,
		DeviceEtag:         etag(1),
		Status:             "enabled",
		StatusUpdateTime:   "0001-01-01T00:00:00Z",
		ConnectionState:    "Disconnected",
		LastActivityTime:   "0001-01-01T00:00:00Z",
		AuthenticationType: "sas",
		X509Thumbprint:     map[string]any{"primaryThumbprint": nil, "secondaryThumbprint": nil},
		ModelID:            info.ModelID,
	}
	if info.Connected {
		st.ConnectionState = "Connected"
	}
	if !info.LastActivity.IsZero() {
		st.LastActivityTime = twin.Timestamp(info.LastActivity)
	}
	if id.Module == "" {
		st.Capabilities = map[string]bool{"iotEdge": h.hasModules(id.Device)}
	}
	var out []byte
	var merr error
	err := h.cfg.Store.ReadTwin(id, func(t *twin.Twin) {
		st.Etag = etag(t.Version)
		st.Version = t.Version
		st.Tags = t.Tags
		st.Properties = map[string]any{
			"desired":  t.Desired.ServiceView(),
			"reported": t.Reported.ServiceView(),
		}
		// Marshal under the store's lock: the maps belong to the store.
		out, merr = json.Marshal(st)
	})
	if errors.Is(err, registry.ErrNotFound) {
		return nil, errNotFound(id.Device, id.Module)
	}
	if err != nil {
		return nil, err
	}
	if merr != nil {
		return nil, fmt.Errorf("failed to encode twin: %w", merr)
	}
	return out, nil
}

func (h *Hub) hasModules(device string) bool {
	for _, i := range h.cfg.Store.Identities() {
		if i.DeviceID == device && i.ModuleID != "" {
			return true
		}
	}
	return false
}

// PatchTwin applies a service PATCH /twins/{d}[/modules/{m}] body ({"tags":{..},
// "properties":{"desired":{..}}}) with the If-Match etag (empty or "*" matches any) and
// returns the updated twin JSON.
func (h *Hub) PatchTwin(id registry.ID, body []byte, ifMatch string) ([]byte, error) {
	var req struct {
		Tags       map[string]any `json:"tags"`
		Properties *struct {
			Desired  map[string]any `json:"desired"`
			Reported map[string]any `json:"reported"`
		} `json:"properties"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		return nil, errArgument("the twin patch is not a JSON object: %v", err)
	}
	var desired map[string]any
	if req.Properties != nil {
		if len(req.Properties.Reported) > 0 {
			return nil, errArgument("reported properties cannot be updated by the service")
		}
		desired = req.Properties.Desired
	}
	for _, p := range []map[string]any{desired, req.Tags} {
		if err := twin.Validate(p); err != nil {
			return nil, errArgument("%v", err)
		}
	}
	if _, err := h.patch(id, desired, req.Tags, strings.Trim(strings.TrimPrefix(ifMatch, "W/"), `"`)); err != nil {
		return nil, err
	}
	return h.ServiceTwin(id)
}

// LoseDesiredPatches makes the next n desired patches of id that would be
// pushed get lost on the way instead: they are applied to the twin, but the
// connected device never sees them, as when a notification is lost across a
// broken link. The device then sees a gap in $version with the next patch.
// A fault for tests; neither IoT Hub nor edgeHub does this on purpose.
func (h *Hub) LoseDesiredPatches(id registry.ID, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lose == nil {
		h.lose = map[registry.ID]int{}
	}
	h.lose[id] = n
}
