// Package config holds the relay's settings: one [Config] struct, loaded in
// the order defaults → JSON file → environment → command-line flags, then
// validated.
//
// The JSON file is decoded strictly: an unknown key, a wrong type or a bad
// value is an error that names the setting by its path, for example
// "cameras[1].localPort: must be 1..65535". Durations are Go duration strings
// ("15s", "1m30s") in the file, the environment and flags alike.
//
// Only three environment variables are read, the ones the IoT Hub emulator
// writes into its service.env: IOTHUB_SERVICE_CONNECTION_STRING,
// IOTHUB_SERVICE_URL and IOTHUB_CA_FILE (see [EnvVars]).
package config
