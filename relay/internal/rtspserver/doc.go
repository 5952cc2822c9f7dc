// Package rtspserver is the relay's RTSP face for shared cameras: one
// gortsplib server on the RTSP port (and the RTSPS port, through one merged
// listener), routed by path, with the relay's own authentication.
//
// Request handling, for rtsp://<relay>/<camera>:
//
//	OPTIONS, GET_PARAMETER, TEARDOWN   answered without credentials (no stream data)
//	DESCRIBE, SETUP, PLAY              authenticated each time (see authorize):
//	  over the failure limit for the source address → 503 + Retry-After, nothing checked
//	  no or bad credentials             → 401 with a Digest challenge (and Basic over RTSPS)
//	  valid user, not on the camera's allow list → 403
//	  no such camera                    → 404 (only after authentication, so that
//	                                       camera names are not revealed to strangers)
//	  players limit reached             → 503
//	  the camera's upstream cannot open → 503
//	  else DESCRIBE waits for the camera's shared stream and answers with its SDP
//
// No request that fails authentication reaches IoT Hub or the edge: the
// upstream is acquired only after the checks.
//
// A connection holds the cameras it described or set up (one viewer each)
// until it closes; the upstream lingers after its last viewer leaves.
//
// Passthrough cameras are not served here (their bytes go to the camera
// unchanged, on a port of their own), but their players pass the same
// checks first: [Gate] answers a connection's requests until one carries
// credentials of an allowed user, then hands the connection, replaying that
// request, to the splice. Its wire contract is beside its constants.
package rtspserver
