// Package rtspfront accepts RTSP players: one TCP listener per camera,
// each connection handed unchanged to a handler (the core's HandlePlayer).
// It does not parse RTSP; bytes are relayed as the player sends them, so a
// player must use the camera's own stream path (the ready line's rtspURL).
package rtspfront
