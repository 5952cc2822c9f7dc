package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"
)

// Mode names the source an [Identity] was loaded from.
type Mode string

const (
	// ModeEdge is a module under the IoT Edge runtime (workload API).
	ModeEdge Mode = "edge"
	// ModeHubDev is a module under iotedgehubdev (connection string and CA file).
	ModeHubDev Mode = "iotedgehubdev"
	// ModeConnectionString is a plain device or module connection string.
	ModeConnectionString Mode = "connectionstring"
)

// DefaultTokenLifetime is the lifetime [Identity.Token] uses when asked for
// zero or less, and the lifetime the Azure SDKs use.
const DefaultTokenLifetime = time.Hour

// signer computes the base64 HMAC-SHA256 signature of data.
type signer interface {
	sign(ctx context.Context, data []byte) (string, error)
}

// Identity is who the module is and how it authenticates. All fields are
// static after [Load]; methods are safe for concurrent use.
type Identity struct {
	// HubHostName is the IoT Hub host name ({name}.azure-devices.net). It is
	// the host in the SAS resource and in the MQTT username.
	HubHostName string
	// GatewayHostName is the host to connect to: edgeHub or a gateway, or
	// HubHostName when the module connects to IoT Hub directly. The server
	// certificate is verified against this name.
	GatewayHostName string
	// DeviceID is the IoT Hub device id.
	DeviceID string
	// ModuleID is the module id, empty for a device identity.
	ModuleID string
	// Mode tells where the identity came from.
	Mode Mode

	roots  *x509.CertPool // static after Load
	signer signer         // static after Load
}

// TLSConfig returns a new TLS client configuration that trusts the roots of
// the identity's source and verifies the server as GatewayHostName. The
// caller may modify the result.
func (id *Identity) TLSConfig() *tls.Config {
	return &tls.Config{
		RootCAs:    id.roots,
		ServerName: id.GatewayHostName,
		MinVersion: tls.VersionTLS12,
	}
}

// Resource returns the SAS resource of the identity:
// {hub}/devices/{device} or {hub}/devices/{device}/modules/{module}.
func (id *Identity) Resource() string {
	r := id.HubHostName + "/devices/" + id.DeviceID
	if id.ModuleID != "" {
		r += "/modules/" + id.ModuleID
	}
	return r
}

// ClientID returns the MQTT client id of the identity: {device}/{module}, or
// {device} for a device identity.
func (id *Identity) ClientID() string {
	if id.ModuleID != "" {
		return id.DeviceID + "/" + id.ModuleID
	}
	return id.DeviceID
}

// Token mints a fresh SAS token for the identity that expires lifetime from
// now (DefaultTokenLifetime when lifetime <= 0), and returns it with its
// expiry, which is whole seconds. In Edge mode it calls the workload API and
// so may block until ctx is done. The token is a secret: never log it.
func (id *Identity) Token(ctx context.Context, lifetime time.Duration) (sas string, expiry time.Time, err error) {
	if lifetime <= 0 {
		lifetime = DefaultTokenLifetime
	}
	expiry = time.Unix(time.Now().Add(lifetime).Unix(), 0)
	sas, err = buildToken(ctx, id.signer, id.Resource(), expiry)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("failed to mint SAS token for %s: %w", id.Resource(), err)
	}
	return sas, expiry, nil
}
