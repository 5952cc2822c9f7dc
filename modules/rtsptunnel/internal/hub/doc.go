// Package hub is the module's IoT Hub client: it keeps one MQTT connection to
// IoT Hub or edgeHub, answers direct methods, reads and patches the twin, and
// forwards desired-property changes.
//
// Create a Client with New, register direct methods with Client.Handle, then
// call Client.Run, which connects, stays connected and returns when its
// context is done. Client.UpdateReported and Client.GetTwin may be called
// from any goroutine, method handlers included.
//
// # Why not the device SDK
//
// The project's chosen SDK is github.com/amenzhinsky/iothub v0.9.1 (on paho).
// This package speaks IoT Hub's MQTT topics through paho directly, because the
// SDK's module transport had to be bypassed or overridden at nearly every
// point DESIGN.md section 5 lists, and the few pieces left (two topic parsers,
// a $rid map) are smaller than the overrides:
//
//   - Method handlers (iotdevice.Client.RegisterMethod) get a decoded
//     map, so empty and non-object payloads become SDK 500s, and an
//     unregistered method is never answered (iotdevice/mux.go,
//     methodMux.Dispatch). Bypassing the Client for the raw transport still
//     publishes every answer on the transport the request came on
//     (iotdevice/transport/mqtt/mqtt.go, subDirectMethods), with no raw
//     publish to send it elsewhere: a call that straddles a token renewal
//     loses its answer.
//   - Connect builds the username (api-version 2018-06-30 for modules,
//     "{hub}/{device}/api-version=2020-09-30" without '?' for devices, model
//     id ignored by modules), the broker URL (fixed port), the TLS roots
//     (trust bundle, or InsecureSkipVerify when it cannot be fetched) and the
//     credentials provider; all of it would be replaced through
//     WithClientOptionsConfig, plus a 12-method transport.Credentials.
//   - Subscriptions are made once, after CONNACK; a failed re-subscription
//     is logged at debug level and forgotten (OnConnectHandler), and with a
//     persistent session the messages the broker delivers right after
//     CONNACK find no route and are dropped.
//   - Twin requests that are pending when the connection drops are never
//     failed (they wait for their context); refusals lose their status code
//     ("request failed with %d response code"), so 429 and 400 look alike.
//
// # How the traps of DESIGN.md section 5 are handled
//
//  1. Ordered routing deadlock: every connection sets SetOrderMatters(false)
//     and the paho callbacks never block: a method call starts a goroutine
//     and returns. Handlers run concurrently (at most 64; more are answered
//     429).
//  2. Twin calls from handlers: twin responses are routed by $rid on paho's
//     own goroutines, independent of handlers.
//  3. Model id: the username always carries api-version=2021-04-12 and
//     model-id (Options.ModelID, default DefaultModelID).
//  4. Trust bundle: package identity fetches it and fails loudly; the TLS
//     configuration comes from the identity only. A certificate that fails
//     verification before the first successful connect makes Run return an
//     error.
//  5. Token expiry and lost desired changes: each connection's token is
//     replaced at 80% of its lifetime by connecting again with a fresh token
//     before the old connection is dropped, with a persistent session
//     (CleanSession=false) so that the broker carries the subscriptions over
//     and methods are never left without a subscriber by our side. After
//     every connect the twin is read and OnTwin called, then OnConnected.
//  6. Method results: the raw payload goes to the handler; unknown methods
//     are answered 404 and panics 500, both with the service's error shape;
//     every answer is valid JSON within 128 KB.
//  7. Failed subscriptions: the three filters are subscribed in one packet on
//     every connection and any refused filter (or a twin that cannot be read
//     after connecting) drops the connection, which Run rebuilds.
//  8. First connect: Run retries every connect with capped exponential
//     backoff and jitter.
//  9. Device identities: the same documented username and the identity's
//     TLS roots are used in every mode.
//
// A token renewal goes like this: the old connection is retired (requests
// and method answers that start now wait for the new connection), the client
// waits until the broker has acknowledged everything sent on it (a broker that
// drops a connection with unread input resets it, and the reset destroys the
// method requests it had already sent us), then connects with the fresh token.
// The broker drops the old connection when the new one arrives (one
// connection per client id) and carries the subscriptions over (persistent
// session). Twin requests that fail on the old connection are retried on the
// new one; method answers whose connection is gone are published on its
// successor. What is left is inside the broker, between dropping the old
// connection and registering the new one; against the emulator, thousands of
// calls across renewals see no failure (TestTokenRenewal).
package hub
