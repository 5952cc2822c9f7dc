package emulator

import (
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/certs"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
)

// Environment files written to the state folder.
const (
	ModuleEnvFile  = "module.env"  // IoT Edge workload mode (IOTEDGE_*), first module
	HubDevEnvFile  = "hubdev.env"  // iotedgehubdev mode (EdgeHubConnectionString), first module
	DeviceEnvFile  = "device.env"  // connection-string mode (IOTHUB_CONNECTION_STRING), first device
	ServiceEnvFile = "service.env" // the relay's service credentials
)

// HubPortEnv tells our module which MQTT port to use when it is not IoT Hub's 8883 (the SDKs
// cannot be told; only our own clients accept the override).
const HubPortEnv = "RTSPTUNNEL_HUBPORT"

// ModuleEnv returns the environment IoT Edge gives a module (workload mode): IOTEDGE_* (hub,
// gateway, device, module, generation id, workload URI, API version, auth scheme), HOSTNAME,
// and RTSPTUNNEL_HUBPORT when the MQTT port is not 8883.
func (e *Emulator) ModuleEnv(deviceID, moduleID string) ([]string, error) {
	id, err := e.module(deviceID, moduleID)
	if err != nil {
		return nil, err
	}
	env := []string{
		"IOTEDGE_IOTHUBHOSTNAME=" + e.HubHostName(),
		"IOTEDGE_GATEWAYHOSTNAME=" + e.GatewayHostName(),
		"IOTEDGE_DEVICEID=" + id.DeviceID,
		"IOTEDGE_MODULEID=" + id.ModuleID,
		"IOTEDGE_MODULEGENERATIONID=" + id.GenerationID,
		"IOTEDGE_WORKLOADURI=" + e.WorkloadURI(),
		"IOTEDGE_APIVERSION=" + WorkloadAPIVersion,
		"IOTEDGE_AUTHSCHEME=sasToken",
		// A container's host name; the SDKs insist on HOSTNAME being set.
		"HOSTNAME=" + id.ModuleID,
	}
	return append(env, e.portEnv()...), nil
}

// HubDevEnv returns the environment iotedgehubdev gives a module: EdgeHubConnectionString
// (with GatewayHostName), EdgeModuleCACertificateFile, and RTSPTUNNEL_HUBPORT when needed.
func (e *Emulator) HubDevEnv(deviceID, moduleID string) ([]string, error) {
	id, err := e.module(deviceID, moduleID)
	if err != nil {
		return nil, err
	}
	cs := fmt.Sprintf("HostName=%s;GatewayHostName=%s;DeviceId=%s;ModuleId=%s;SharedAccessKey=%s",
		e.HubHostName(), e.GatewayHostName(), id.DeviceID, id.ModuleID, base64.StdEncoding.EncodeToString(id.Key))
	env := []string{"EdgeHubConnectionString=" + cs, "EdgeModuleCACertificateFile=" + e.CAFile()}
	return append(env, e.portEnv()...), nil
}

// ConnectionString returns the identity's connection string,
// "HostName=..;DeviceId=..[;ModuleId=..];SharedAccessKey=..", with ";GatewayHostName=<addr>"
// when the hub host name is not the address clients must dial.
func (e *Emulator) ConnectionString(deviceID, moduleID string) (string, error) {
	id, ok := e.store.Lookup(deviceID, moduleID)
	if !ok {
		return "", fmt.Errorf("emulator: identity %s is not registered", registry.ID{Device: deviceID, Module: moduleID})
	}
	cs := "HostName=" + e.HubHostName() + ";DeviceId=" + id.DeviceID
	if id.ModuleID != "" {
		cs += ";ModuleId=" + id.ModuleID
	}
	cs += ";SharedAccessKey=" + base64.StdEncoding.EncodeToString(id.Key)
	if e.HubHostName() != e.GatewayHostName() {
		cs += ";GatewayHostName=" + e.GatewayHostName()
	}
	return cs, nil
}

// DeviceEnv returns the environment of a plain device (or module) app in connection-string
// mode: IOTHUB_CONNECTION_STRING, IOTHUB_CA_FILE (the CA to trust instead of the public
// roots) and RTSPTUNNEL_HUBPORT when needed.
func (e *Emulator) DeviceEnv(deviceID, moduleID string) ([]string, error) {
	cs, err := e.ConnectionString(deviceID, moduleID)
	if err != nil {
		return nil, err
	}
	env := []string{"IOTHUB_CONNECTION_STRING=" + cs, "IOTHUB_CA_FILE=" + e.CAFile()}
	return append(env, e.portEnv()...), nil
}

// ServiceConnectionString returns the service policy's connection string,
// "HostName=..;SharedAccessKeyName=service;SharedAccessKey=..".
func (e *Emulator) ServiceConnectionString() string {
	return fmt.Sprintf("HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s",
		e.HubHostName(), e.policy.Name, base64.StdEncoding.EncodeToString(e.policy.Key))
}

// ServiceEnv returns the relay's environment: IOTHUB_SERVICE_CONNECTION_STRING,
// IOTHUB_SERVICE_URL (https://<addr>:<port>, where the REST API really listens) and
// IOTHUB_CA_FILE.
func (e *Emulator) ServiceEnv() []string {
	return []string{
		"IOTHUB_SERVICE_CONNECTION_STRING=" + e.ServiceConnectionString(),
		"IOTHUB_SERVICE_URL=https://" + e.HTTPSAddr(),
		"IOTHUB_CA_FILE=" + e.CAFile(),
	}
}

func (e *Emulator) portEnv() []string {
	if p := e.MQTTPort(); p != StandardMQTTPort {
		return []string{HubPortEnv + "=" + strconv.Itoa(p)}
	}
	return nil
}

func (e *Emulator) module(deviceID, moduleID string) (registry.Identity, error) {
	if moduleID == "" {
		return registry.Identity{}, fmt.Errorf("emulator: %s is a device, not a module", deviceID)
	}
	id, ok := e.store.Lookup(deviceID, moduleID)
	if !ok {
		return registry.Identity{}, fmt.Errorf("emulator: module %s/%s is not registered", deviceID, moduleID)
	}
	return id, nil
}

// writeEnvFiles writes module.env and hubdev.env (first module), device.env (first declared
// device, else the first module's device) and service.env.
func (e *Emulator) writeEnvFiles() error {
	files := map[string][]string{ServiceEnvFile: e.ServiceEnv()}
	if e.first.Module != "" {
		m, err := e.ModuleEnv(e.first.Device, e.first.Module)
		if err != nil {
			return err
		}
		files[ModuleEnvFile] = m
		if files[HubDevEnvFile], err = e.HubDevEnv(e.first.Device, e.first.Module); err != nil {
			return err
		}
	}
	dev := e.first.Device
	for _, id := range e.opts.Identities {
		if id.ModuleID == "" {
			dev = id.DeviceID
			break
		}
	}
	d, err := e.DeviceEnv(dev, "")
	if err != nil {
		return err
	}
	files[DeviceEnvFile] = d
	for name, env := range files {
		// 0600: they hold keys.
		if err := certs.WriteFileAtomic(filepath.Join(e.dir, name), []byte(strings.Join(env, "\n")+"\n"), 0o600); err != nil {
			return fmt.Errorf("emulator: %w", err)
		}
	}
	return nil
}
