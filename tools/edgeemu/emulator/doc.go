// Package emulator runs an offline stand-in for Azure IoT Hub, edgeHub and the IoT Edge
// workload API, for the rtsptunnel demo and tests.
//
// One Emulator serves, on one loopback address:
//
//   - MQTT 3.1.1 over TLS (IoT Hub's port 8883) with IoT Hub's SAS authentication, topic rules,
//     direct methods ($rid correlation), twins (GET, reported PATCH, desired pushes), 128 KB method
//     and 32 KB reported-properties limits, and disconnection of clients whose token expired
//     (checked every 5 minutes, as edgeHub does; Options.TokenCheckInterval). A second connection
//     with the same client id is handled as edgeHub does (see the README, "Token renewal against
//     edgeHub"): the old connection is closed after the new CONNACK and its pending method calls
//     fail with 504, and a persistent session's subscriptions come back only after that;
//   - HTTPS (IoT Hub's port 443) with the service REST API (invoke a device or module method,
//     read and patch twins) and MQTT over WebSockets at /$iothub/websocket;
//   - the workload API (sign, trust-bundle) on a unix socket.
//
// New validates the options, loads or creates the state folder (CA and server certificate,
// identities, keys, generation ids, twins), listens and starts serving before it returns; Close
// stops everything. A second emulator started on the same folder resumes where the first one
// stopped, so tests can restart it under a reconnecting client. Several emulators run side by
// side on different loopback addresses (127.0.0.2, 127.0.0.3, ...) or ports.
//
// The folder also receives environment files for the clients (module.env, hubdev.env,
// device.env, service.env); the same values come from ModuleEnv, HubDevEnv, DeviceEnv and
// ServiceEnv. They use the docker --env-file format: KEY=VALUE lines, no quoting (connection
// strings contain ';', so do not source them in a shell).
//
// All methods of Emulator are safe for concurrent use.
package emulator
