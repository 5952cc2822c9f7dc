package whep

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// ICE says where WebRTC media flows. Every peer shares one UDP port (a UDP
// mux) and one TCP port (ICE-TCP, passive), so a cloud firewall needs two
// rules, and the relay needs no STUN server: it is the reachable side.
type ICE struct {
	// UDPListen is the UDP address for every peer's media, e.g. ":8189";
	// empty disables UDP.
	UDPListen string
	// TCPListen is the TCP address for ICE-TCP, e.g. ":8189"; empty
	// disables it. Browsers use it when UDP is blocked on their side.
	TCPListen string
	// PublicIPs replace the host addresses in the relay's candidates: the
	// addresses browsers can reach when the relay sits behind 1:1 NAT
	// (a cloud VM's public IP). Empty advertises the listeners' own
	// addresses (all interfaces' when they listen on every address).
	PublicIPs []string
}

// network is the relay's WebRTC side: the shared sockets and the pion API
// that uses them.
type network struct {
	api     *webrtc.API
	udp     net.PacketConn
	tcp     net.Listener
	udpMux  ice.UDPMux
	tcpMux  ice.TCPMux
	udpAddr string // actual addresses, for the ready line
	tcpAddr string
}

// listen opens the ICE sockets and builds the API, logging to log. On
// error nothing is left open.
func (c ICE) listen(log *slog.Logger) (n *network, err error) {
	if c.UDPListen == "" && c.TCPListen == "" {
		return nil, errors.New("whep: neither a UDP nor a TCP ICE address is set")
	}
	n = &network{}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	logs := pionLogs{log}
	se := webrtc.SettingEngine{LoggerFactory: logs}
	// No mDNS: the relay publishes plain addresses, and must send nothing
	// to multicast groups.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	var types []webrtc.NetworkType
	var hosts []netip.Addr // the specific addresses listened on
	if c.UDPListen != "" {
		n.udp, err = net.ListenPacket("udp", c.UDPListen)
		if err != nil {
			return nil, fmt.Errorf("failed to listen on UDP %s: %w", c.UDPListen, err)
		}
		n.udpAddr = n.udp.LocalAddr().String()
		n.udpMux = webrtc.NewICEUDPMux(logs.NewLogger("udpmux"), n.udp)
		se.SetICEUDPMux(n.udpMux)
		types = append(types, webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6)
		hosts = append(hosts, listenHost(n.udp.LocalAddr()))
	}
	if c.TCPListen != "" {
		n.tcp, err = net.Listen("tcp", c.TCPListen)
		if err != nil {
			return nil, fmt.Errorf("failed to listen on TCP %s: %w", c.TCPListen, err)
		}
		n.tcpAddr = n.tcp.Addr().String()
		n.tcpMux = webrtc.NewICETCPMux(logs.NewLogger("tcpmux"), n.tcp, 64)
		se.SetICETCPMux(n.tcpMux)
		types = append(types, webrtc.NetworkTypeTCP4, webrtc.NetworkTypeTCP6)
		hosts = append(hosts, listenHost(n.tcp.Addr()))
	}
	se.SetNetworkTypes(types)
	// The relay never dials out to browsers over TCP: they may be behind
	// NAT, and an outbound connection per candidate wastes sockets.
	se.DisableActiveTCP(true)
	loopback := false
	specific := map[netip.Addr]bool{}
	for _, h := range hosts {
		if h.IsValid() && !h.IsUnspecified() {
			specific[h] = true
			loopback = loopback || h.IsLoopback()
		}
	}
	if len(specific) == len(hosts) {
		// Only specific addresses: advertise just those (ICE-TCP would
		// otherwise name every interface's address with the TCP port).
		se.SetIPFilter(func(ip net.IP) bool {
			a, ok := netip.AddrFromSlice(ip)
			return ok && specific[a.Unmap()]
		})
	}
	se.SetIncludeLoopbackCandidate(loopback)
	if loopback && len(specific) == len(hosts) && allLoopback(specific) {
		// A relay listening on loopback only serves this host: it answers
		// no peer at another address (a browser's interface-bound socket
		// may send to 127.0.0.1 from its LAN address).
		se.SetRemoteIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	}
	if len(c.PublicIPs) > 0 {
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        c.PublicIPs,
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteReplace,
		}); err != nil {
			return nil, fmt.Errorf("public IPs: %w", err)
		}
	}

	me := &webrtc.MediaEngine{}
	// H.264 only, packetization mode 1 (what browsers send and receive),
	// with the profiles cameras use; the camera's stream passes through,
	// so the profile only has to be one the browser decodes.
	for i, p := range []string{"42e01f", "42001f", "4d001f", "640032"} {
		if err := me.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
				SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + p,
				RTCPFeedback: []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}},
			},
			PayloadType: webrtc.PayloadType(102 + 2*i),
		}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, fmt.Errorf("failed to register H.264: %w", err)
		}
	}
	ir := &interceptor.Registry{}
	// NACKs are answered from a per-peer buffer of sent packets, and
	// sender reports let browsers synchronize.
	if err := webrtc.ConfigureNack(me, ir); err != nil {
		return nil, fmt.Errorf("failed to configure NACK: %w", err)
	}
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		return nil, fmt.Errorf("failed to configure RTCP reports: %w", err)
	}
	n.api = webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir))
	return n, nil
}

func (n *network) close() {
	if n.udpMux != nil {
		n.udpMux.Close()
	}
	if n.udp != nil {
		n.udp.Close()
	}
	if n.tcpMux != nil {
		n.tcpMux.Close()
	}
	if n.tcp != nil {
		n.tcp.Close()
	}
}

func listenHost(a net.Addr) netip.Addr {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func allLoopback(addrs map[netip.Addr]bool) bool {
	for a := range addrs {
		if !a.IsLoopback() {
			return false
		}
	}
	return true
}
