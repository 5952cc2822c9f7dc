package session

import (
	"context"
	"net"
)

// SetDialCamera replaces the camera dialler; call before Initialize.
func (m *Manager) SetDialCamera(f func(ctx context.Context, network, addr string) (net.Conn, error)) {
	m.dialCamera = f
}
