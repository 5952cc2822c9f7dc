// Package identity finds out who the module is and how it proves it: the IoT
// Hub and gateway host names, the device and module ids, the TLS roots that
// the gateway's certificate must chain to, and a source of SAS tokens.
//
// [Load] reads the environment; the first complete source wins:
//
//  1. IoT Edge (Mode [ModeEdge]): the IOTEDGE_* variables that the IoT Edge
//     runtime gives every module. Tokens are signed by the workload API
//     (POST /modules/{m}/genid/{g}/sign) and the TLS roots come from its
//     trust bundle (GET /trust-bundle). The workload URI may be unix:// or
//     http://. A trust bundle that cannot be fetched or parsed is an error:
//     TLS verification is never turned off.
//  2. iotedgehubdev (Mode [ModeHubDev]): EdgeHubConnectionString with
//     HostName, GatewayHostName, DeviceId, ModuleId and SharedAccessKey, and
//     EdgeModuleCACertificateFile with the gateway's CA.
//  3. A device or module connection string (Mode [ModeConnectionString]):
//     IOTHUB_CONNECTION_STRING with HostName, DeviceId, optional ModuleId,
//     SharedAccessKey and optional GatewayHostName. The TLS roots are the
//     system roots plus, when IOTHUB_CA_FILE names a PEM file, its
//     certificates (for a gateway or an emulator with a private CA).
//
// A source counts as chosen as soon as one of its variables is set; a chosen
// source that is incomplete is an error naming every missing variable, never
// a silent fall-through to the next source.
//
// SAS tokens follow the IoT Hub format: the resource is
// {hub}/devices/{device}[/modules/{module}], the string to sign is
// urlencode(resource) + "\n" + expiry (Unix seconds), the signature is
// HMAC-SHA256 with the key, and the token reads
// "SharedAccessSignature sr=..&sig=..&se=..". Tokens and keys are secrets:
// nothing in this package logs them or puts them into errors.
package identity
