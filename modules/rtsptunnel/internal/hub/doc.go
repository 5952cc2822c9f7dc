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
//     replaced by connecting again with a fresh token, between 50% and 90%
//     of its lifetime, after unsubscribing the old connection from methods
//     and answering what it was given (see below), with a persistent
//     session (CleanSession=false). After every
//     connect the twin is read and OnTwin called, then OnConnected.
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
// # Token renewal, and what edgeHub does that it relies on
//
// MQTT 3.1.1 cannot replace the token of a live connection, so a renewal
// connects again with the same client id. What edgeHub does then (Azure/iotedge
// edge-hub/core/src; tools/edgeemu does the same, see its README, "Token
// renewal against edgeHub"):
//
//   - it sends CONNACK, then binds the new connection, with no subscriptions,
//     in place of the old one (Core/ConnectionManager.cs,
//     AddDeviceConnection), and closes the old one right after;
//   - the method calls still waiting for an answer on the old connection fail
//     with 504 when it closes, and an answer published on the new connection
//     for them is dropped: answers count only on the connection the request
//     came in on (Core/device/DeviceMessageHandler.cs). A 504 is ambiguous
//     for the caller: the module may have acted;
//   - a persistent session's subscriptions are restored on the new connection
//     after that, with store and forward on (the default);
//   - a call that finds the module connected without a method subscription is
//     answered 404 (404103) at once: calls from the cloud carry connect
//     timeout 0 (Core/InvokeMethodHandler.cs, InvokeMethod and
//     GetDeviceProxyWithSubscription). An UNSUBSCRIBE from
//     $iothub/methods/POST/# removes that subscription before the UNSUBACK is
//     sent: the ProtocolGateway hands the changed session to
//     Mqtt/SessionStatePersistenceProvider.cs (SetAsync; Mqtt/SessionState.cs
//     keeps IsTransient false for that), which goes through
//     Core/SubscriptionProcessorBase.cs to ConnectionManager.RemoveSubscription.
//     A 404103 is safe to retry: the module never saw the call. Calls
//     delivered before stay the connection's and are answered on it;
//   - it finds expired tokens every 5 minutes (ConnectionReauthenticator).
//
// So a renewal goes like this (Client.renew). From half the token's lifetime
// on, the client mints the new token (a workload API that fails or hangs
// fails the attempt within renewTimeout; the old connection goes on and the
// attempt is repeated with backoff), then waits for a moment when the old
// connection is idle (no method call whose answer the broker has not
// acknowledged, no other publish waiting for its PUBACK), until 90% of the
// lifetime. It then unsubscribes the old connection from methods; from the
// UNSUBACK on, callers get 404103, which they can retry safely with a short
// backoff (relay/internal/core, open, does). It serves what the old connection was
// given, including requests edgeHub dispatched just before it processed the
// UNSUBSCRIBE and that arrive after the UNSUBACK (paho drops the filter's
// route at once, so the connection's default handler takes them), and
// answers each there, until the connection has been quiet (nothing in flight,
// nothing arrived) for 250 ms or four UNSUBSCRIBE round trips, whichever is
// longer; at most 30 s (IoT Hub's default method timeout) and never past 95%
// of the token's lifetime (the calls still in flight then fail, logged). Only
// then does it mark the old connection retired (twin requests wait for the
// new one, or are retried on it), connect and subscribe; the renewal is done
// when the new connection is subscribed. If the connect fails, the old
// connection subscribes to methods again and goes on (or is closed, and
// rebuilt, if it cannot). Every call is answered on the connection it came in
// on, never elsewhere.
//
// The price is a window of a few hundred milliseconds per renewal (longer if
// a call was in flight when it began) in which calls are answered 404103 and
// retried by the caller, against calls that would fail with 504 after the
// module may have acted on them. TestTokenRenewal (in emulatortest, and through the real
// binaries, tests/resilience_test.go TestTokenRenewalUnderLoad) measures it:
// thousands of calls, slow ones included, across 8 renewals, with callers
// retrying 404103 as the relay does, and no call fails.
package hub
