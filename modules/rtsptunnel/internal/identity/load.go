package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Environment variables read by [Load].
const (
	// IoT Edge runtime (ModeEdge).
	EnvWorkloadURI        = "IOTEDGE_WORKLOADURI"
	EnvIoTHubHostName     = "IOTEDGE_IOTHUBHOSTNAME"
	EnvGatewayHostName    = "IOTEDGE_GATEWAYHOSTNAME"
	EnvDeviceID           = "IOTEDGE_DEVICEID"
	EnvModuleID           = "IOTEDGE_MODULEID"
	EnvModuleGenerationID = "IOTEDGE_MODULEGENERATIONID"
	EnvAPIVersion         = "IOTEDGE_APIVERSION" // optional, informational
	EnvAuthScheme         = "IOTEDGE_AUTHSCHEME" // must be "sasToken"

	// iotedgehubdev (ModeHubDev).
	EnvEdgeHubConnectionString = "EdgeHubConnectionString"
	EnvEdgeModuleCAFile        = "EdgeModuleCACertificateFile"

	// Plain connection string (ModeConnectionString).
	EnvConnectionString = "IOTHUB_CONNECTION_STRING"
	// EnvHubCAFile optionally names a PEM file whose certificates are trusted
	// in addition to the system roots in ModeConnectionString: the CA of a
	// gateway (GatewayHostName=) or of the emulator.
	EnvHubCAFile = "IOTHUB_CA_FILE"
)

// edgeVars are the IoT Edge variables that must all be set, in the order
// they are reported when missing.
var edgeVars = []string{
	EnvWorkloadURI, EnvIoTHubHostName, EnvGatewayHostName, EnvDeviceID,
	EnvModuleID, EnvModuleGenerationID, EnvAuthScheme,
}

// ErrNoIdentity is wrapped by the error of [Load] when no identity source is
// configured at all.
var ErrNoIdentity = errors.New("no IoT Hub identity configured")

// MissingError reports an identity source that is chosen but incomplete.
type MissingError struct {
	Mode Mode
	// Missing lists the missing variables; a missing connection-string key
	// reads "IOTHUB_CONNECTION_STRING:DeviceId".
	Missing []string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("incomplete %s identity: missing %s", e.Mode, strings.Join(e.Missing, ", "))
}

// Load builds the module's identity from the environment, as described in the
// package documentation. getenv is normally os.Getenv. In ModeEdge it calls
// the workload API for the trust bundle and fails when that fails; ctx bounds
// that call.
func Load(ctx context.Context, getenv func(string) string) (*Identity, error) {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }

	anySet := func(keys ...string) bool {
		for _, k := range keys {
			if get(k) != "" {
				return true
			}
		}
		return false
	}
	var id *Identity
	var err error
	switch {
	case anySet(edgeVars...):
		id, err = loadEdge(ctx, get)
	case anySet(EnvEdgeHubConnectionString, EnvEdgeModuleCAFile):
		id, err = loadHubDev(get)
	case anySet(EnvConnectionString):
		id, err = loadConnectionString(get)
	default:
		err = fmt.Errorf("%w: set the IOTEDGE_* variables (IoT Edge), %s and %s (iotedgehubdev), or %s",
			ErrNoIdentity, EnvEdgeHubConnectionString, EnvEdgeModuleCAFile, EnvConnectionString)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to load identity: %w", err)
	}
	return id, nil
}

func loadEdge(ctx context.Context, get func(string) string) (*Identity, error) {
	var missing []string
	for _, k := range edgeVars {
		if get(k) == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, &MissingError{Mode: ModeEdge, Missing: missing}
	}
	if s := get(EnvAuthScheme); !strings.EqualFold(s, "sasToken") {
		return nil, fmt.Errorf("%s=%q is not supported (want sasToken)", EnvAuthScheme, s)
	}
	wc, err := newWorkloadClient(get(EnvWorkloadURI), get(EnvModuleID), get(EnvModuleGenerationID))
	if err != nil {
		return nil, err
	}
	roots, err := wc.trustBundle(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to fetch the edge trust bundle: %w", err)
	}
	return &Identity{
		HubHostName:     get(EnvIoTHubHostName),
		GatewayHostName: get(EnvGatewayHostName),
		DeviceID:        get(EnvDeviceID),
		ModuleID:        get(EnvModuleID),
		Mode:            ModeEdge,
		roots:           roots,
		signer:          wc,
	}, nil
}

func loadHubDev(get func(string) string) (*Identity, error) {
	var missing []string
	cs := get(EnvEdgeHubConnectionString)
	var kv map[string]string
	if cs == "" {
		missing = append(missing, EnvEdgeHubConnectionString)
	} else {
		var err error
		kv, err = parseConnectionString(cs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvEdgeHubConnectionString, err)
		}
		for _, k := range []string{"HostName", "DeviceId", "ModuleId", "SharedAccessKey"} {
			if kv[k] == "" {
				missing = append(missing, EnvEdgeHubConnectionString+":"+k)
			}
		}
	}
	caFile := get(EnvEdgeModuleCAFile)
	if caFile == "" {
		missing = append(missing, EnvEdgeModuleCAFile)
	}
	if len(missing) > 0 {
		return nil, &MissingError{Mode: ModeHubDev, Missing: missing}
	}
	id, err := fromConnectionString(kv, ModeHubDev, EnvEdgeHubConnectionString)
	if err != nil {
		return nil, err
	}
	// edgeHub's certificate chains to the iotedgehubdev CA only.
	id.roots, err = readPEMFile(x509.NewCertPool(), caFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvEdgeModuleCAFile, err)
	}
	return id, nil
}

func loadConnectionString(get func(string) string) (*Identity, error) {
	kv, err := parseConnectionString(get(EnvConnectionString))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvConnectionString, err)
	}
	var missing []string
	for _, k := range []string{"HostName", "DeviceId", "SharedAccessKey"} {
		if kv[k] == "" {
			missing = append(missing, EnvConnectionString+":"+k)
		}
	}
	if len(missing) > 0 {
		return nil, &MissingError{Mode: ModeConnectionString, Missing: missing}
	}
	id, err := fromConnectionString(kv, ModeConnectionString, EnvConnectionString)
	if err != nil {
		return nil, err
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if f := get(EnvHubCAFile); f != "" {
		if roots, err = readPEMFile(roots, f); err != nil {
			return nil, fmt.Errorf("%s: %w", EnvHubCAFile, err)
		}
	}
	id.roots = roots
	return id, nil
}

// fromConnectionString builds an identity with a local key signer from the
// keys of a device or module connection string.
func fromConnectionString(kv map[string]string, mode Mode, env string) (*Identity, error) {
	if kv["SharedAccessKeyName"] != "" {
		return nil, fmt.Errorf("%s is a service (policy) connection string; a device or module connection string is needed", env)
	}
	if strings.EqualFold(kv["x509"], "true") {
		return nil, fmt.Errorf("%s: X.509 authentication is not supported, use a SharedAccessKey", env)
	}
	s, err := newKeySigner(kv["SharedAccessKey"])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", env, err)
	}
	gw := kv["GatewayHostName"]
	if gw == "" {
		gw = kv["HostName"]
	}
	return &Identity{
		HubHostName:     kv["HostName"],
		GatewayHostName: gw,
		DeviceID:        kv["DeviceId"],
		ModuleID:        kv["ModuleId"],
		Mode:            mode,
		signer:          s,
	}, nil
}

// connectionStringKeys maps the lower-case keys we know to their canonical
// spelling; IoT Hub tools are not consistent about case.
var connectionStringKeys = map[string]string{
	"hostname":            "HostName",
	"gatewayhostname":     "GatewayHostName",
	"deviceid":            "DeviceId",
	"moduleid":            "ModuleId",
	"sharedaccesskey":     "SharedAccessKey",
	"sharedaccesskeyname": "SharedAccessKeyName",
	"x509":                "x509",
}

// parseConnectionString splits "K=V;K=V" into canonical keys. Values may
// contain '=' (base64 keys end with it). Unknown keys are ignored. Errors
// never quote the string: it holds a key.
func parseConnectionString(cs string) (map[string]string, error) {
	kv := map[string]string{}
	for i, part := range strings.Split(cs, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("malformed connection string: element %d is not key=value", i+1)
		}
		if canon, known := connectionStringKeys[strings.ToLower(strings.TrimSpace(k))]; known {
			kv[canon] = strings.TrimSpace(v)
		}
	}
	return kv, nil
}

// readPEMFile appends the certificates of a PEM file to pool.
func readPEMFile(pool *x509.CertPool, path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read CA file: %w", err)
	}
	if err := appendPEM(pool, b); err != nil {
		return nil, fmt.Errorf("CA file %s: %w", path, err)
	}
	return pool, nil
}
