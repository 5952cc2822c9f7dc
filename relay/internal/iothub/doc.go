// Package iothub is a small client for the IoT Hub service REST API: it
// invokes direct methods on devices and modules.
//
// Requests are authorized by an [Authorizer]: [SAS] signs shared access
// signatures from a service connection string (renewed before they expire),
// [Entra] gets Microsoft Entra ID tokens from an azcore.TokenCredential
// such as azidentity's DefaultAzureCredential. Both cache their header value.
//
// Wire contract (api-version 2021-04-12):
//
//	POST {base}/twins/{deviceId}/modules/{moduleId}/methods?api-version=2021-04-12
//	POST {base}/twins/{deviceId}/methods?api-version=2021-04-12      (plain device)
//	Authorization: SharedAccessSignature sr={hub}&sig=..&se=..&skn={policy} | Bearer <token>
//	{"methodName":"tunnelOpen","payload":{..},"responseTimeoutInSeconds":N,"connectTimeoutInSeconds":0}
//
//	200 {"status":<module's status>,"payload":<module's JSON>}
//	404 errorCode 404103: device or module not online (or not subscribed to methods)
//	504 errorCode 504101: the module did not answer within responseTimeoutInSeconds
//
// Any status other than 200 is returned as an [*Error] carrying the hub's
// body; errors.Is matches it against [ErrDeviceNotOnline] and [ErrTimeout].
package iothub
