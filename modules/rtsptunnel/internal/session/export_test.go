package session

import (
	"context"
	"net"
	"net/netip"
)

// SetDialCamera replaces the camera dialler; call before Initialize.
func (m *Manager) SetDialCamera(f func(ctx context.Context, network, addr string) (net.Conn, error)) {
	m.dialCamera = f
}

// SetRemoteNet replaces the resolver and dialler of remote endpoints; call
// before Initialize. Either may be nil (the default).
func (m *Manager) SetRemoteNet(lookup func(ctx context.Context, network, host string) ([]netip.Addr, error),
	dial func(ctx context.Context, network, addr string) (net.Conn, error)) {
	m.lookupNetIP, m.dialRemote = lookup, dial
}
