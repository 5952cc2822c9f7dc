package emulator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/certs"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/hub"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/registry"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/rest"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/workload"
)

// Defaults.
const (
	DefaultAddr        = "127.0.0.1"
	DefaultDeviceID    = "edge-device"
	DefaultModuleID    = "rtsptunnel"
	ServicePolicyName  = "service"
	WorkloadAPIVersion = "2019-11-05"
	StandardMQTTPort   = 8883
	StandardHTTPSPort  = 443
	// DefaultTokenCheckInterval is how often edgeHub drops clients whose token expired.
	DefaultTokenCheckInterval = hub.DefaultTokenCheckInterval
	defaultWorkloadName       = "workload.sock"
	maxUnixSocketPathLen      = 107 // sun_path is 108 bytes on Linux, including the NUL
)

// Options configures an Emulator. The zero value of each field is its default.
type Options struct {
	// Addr is the IP address to listen on; default "127.0.0.1". It must be a loopback address
	// unless AllowNonLoopback is set. It is also the gateway host name given to modules.
	Addr string
	// HubHostName is the IoT Hub host name clients put in usernames and SAS resources;
	// default Addr, so every client can resolve it.
	HubHostName string
	// MQTTPort and HTTPSPort are the listening ports; 0 picks free ports (the binary's flags
	// default to IoT Hub's 8883 and 443).
	MQTTPort, HTTPSPort int
	// Dir is the state folder (required); it is created if missing.
	Dir string
	// WorkloadSocket is the workload API's unix socket; default <Dir>/workload.sock. The
	// path must fit in a sockaddr_un (107 bytes).
	WorkloadSocket string
	// Identities are the devices (ModuleID "") and modules to register, in addition to those
	// already in the state folder; default one module edge-device/rtsptunnel. A module's
	// device is registered with it. The first module is the one module.env describes.
	Identities []Identity
	// ServicePolicyKey is the key of the "service" shared access policy; nil keeps the stored
	// key or generates one.
	ServicePolicyKey []byte
	// MaxTokenLifetime, when positive, disconnects a client this long after it connected even
	// if its token lasts longer; 0 honours the token's expiry only.
	MaxTokenLifetime time.Duration
	// TokenCheckInterval is how often expired tokens are looked for: a client is disconnected
	// at the first check after its token expired, as edgeHub does every 5 minutes (the
	// default, DefaultTokenCheckInterval). Tests shorten it.
	TokenCheckInterval time.Duration
	// NoStoreAndForward behaves as edgeHub with storeAndForwardEnabled=false: a persistent
	// session's subscriptions are not restored when its client connects again.
	NoStoreAndForward bool
	// TrustedBearerTokens are accepted by the REST API as "Authorization: Bearer <token>",
	// standing in for Microsoft Entra ID tokens.
	TrustedBearerTokens []string
	// AllowNonLoopback permits a non-loopback Addr.
	AllowNonLoopback bool
	// Logger receives JSON-able structured events; nil discards them.
	Logger *slog.Logger
}

// Identity is a device (ModuleID empty) or module identity.
type Identity struct {
	DeviceID, ModuleID string
	// Key is the primary symmetric key; nil keeps the stored key or generates one.
	Key []byte
}

// HubError is an IoT Hub error with the HTTP status, numeric code (e.g. 404103) and name the
// REST API reports. InvokeMethod, Twin and PatchDesired return it as *HubError.
type HubError = hub.Error

// IoT Hub error codes the emulator returns.
const (
	CodeArgumentInvalid    = hub.CodeArgumentInvalid
	CodeUnauthorized       = hub.CodeUnauthorized
	CodeDeviceNotFound     = hub.CodeDeviceNotFound
	CodeModuleNotFound     = hub.CodeModuleNotFound
	CodeDeviceNotOnline    = hub.CodeDeviceNotOnline
	CodePreconditionFailed = hub.CodePreconditionFailed
	CodeMessageTooLarge    = hub.CodeMessageTooLarge
	CodeGatewayTimeout     = hub.CodeGatewayTimeout
)

// ErrClosed is returned by calls interrupted by Close.
var ErrClosed = hub.ErrClosed

// ConnInfo describes an identity's current or last MQTT connection (model id, transport,
// token expiry, number of connects...).
type ConnInfo = hub.ConnInfo

// MethodRequest is a direct method call with every IoT Hub parameter (see Invoke).
type MethodRequest = hub.MethodRequest

// MethodResponse is a device's answer to a direct method.
type MethodResponse = hub.MethodResponse

// Emulator is a running emulator. Create it with New, stop it with Close.
type Emulator struct {
	opts   Options      // static, defaults applied
	dir    string       // static, absolute
	log    *slog.Logger // static
	store  *registry.Store
	bundle *certs.Bundle
	hub    *hub.Hub
	policy registry.Policy
	first  registry.ID // static: the first declared module (or device)

	mqttAddr, httpsAddr string // static
	workloadPath        string // static, absolute

	httpsSrv, workloadSrv *http.Server
	serveWG               sync.WaitGroup // the two http.Server.Serve goroutines

	closeOnce sync.Once
	closeErr  error
}

// New validates opts, loads or creates the state folder, listens on the MQTT, HTTPS and
// workload endpoints and starts serving them, then writes the environment files. Everything
// that can fail fails here; on error nothing is left listening.
func New(opts Options) (_ *Emulator, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	ip := net.ParseIP(opts.Addr)
	if ip == nil {
		return nil, fmt.Errorf("emulator: address %q is not an IP address", opts.Addr)
	}
	if !ip.IsLoopback() && !opts.AllowNonLoopback {
		return nil, fmt.Errorf("emulator: address %s is not a loopback address (set AllowNonLoopback to bind it anyway)", opts.Addr)
	}
	if opts.HubHostName == "" {
		opts.HubHostName = opts.Addr
	}
	if opts.MQTTPort < 0 || opts.MQTTPort > 65535 || opts.HTTPSPort < 0 || opts.HTTPSPort > 65535 {
		return nil, errors.New("emulator: ports must be within 0..65535")
	}
	if opts.Dir == "" {
		return nil, errors.New("emulator: Dir (the state folder) is required")
	}
	if opts.TokenCheckInterval < 0 {
		return nil, fmt.Errorf("emulator: TokenCheckInterval %v is negative", opts.TokenCheckInterval)
	}
	if len(opts.Identities) == 0 {
		opts.Identities = []Identity{{DeviceID: DefaultDeviceID, ModuleID: DefaultModuleID}}
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("emulator: failed to resolve %s: %w", opts.Dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("emulator: failed to create the state folder: %w", err)
	}
	e := &Emulator{opts: opts, dir: dir, log: opts.Logger}
	if err := e.loadState(); err != nil {
		return nil, err
	}

	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()

	mqttLn, err := net.Listen("tcp", net.JoinHostPort(opts.Addr, strconv.Itoa(opts.MQTTPort)))
	if err != nil {
		return nil, fmt.Errorf("emulator: failed to listen for MQTT: %w", err)
	}
	cleanup = append(cleanup, func() { mqttLn.Close() })
	httpsLn, err := net.Listen("tcp", net.JoinHostPort(opts.Addr, strconv.Itoa(opts.HTTPSPort)))
	if err != nil {
		return nil, fmt.Errorf("emulator: failed to listen for HTTPS: %w", err)
	}
	cleanup = append(cleanup, func() { httpsLn.Close() })
	wlLn, err := e.listenWorkload()
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { wlLn.Close(); os.Remove(e.workloadPath) })
	e.mqttAddr, e.httpsAddr = mqttLn.Addr().String(), httpsLn.Addr().String()

	e.hub, err = hub.New(hub.Config{
		HubHostName:        opts.HubHostName,
		Store:              e.store,
		MaxTokenLifetime:   opts.MaxTokenLifetime,
		TokenCheckInterval: opts.TokenCheckInterval,
		NoStoreAndForward:  opts.NoStoreAndForward,
		Logger:             e.log,
	})
	if err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	cleanup = append(cleanup, func() { e.hub.Close() })
	mqttTLS := &tls.Config{Certificates: []tls.Certificate{e.bundle.Server}, MinVersion: tls.VersionTLS12}
	if err := e.hub.Serve(mqttLn, mqttTLS); err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/$iothub/websocket", e.hub.ServeWebSocket)
	mux.Handle("/", rest.Handler(rest.Config{
		HubHostName:         opts.HubHostName,
		Hub:                 e.hub,
		Store:               e.store,
		TrustedBearerTokens: opts.TrustedBearerTokens,
		Logger:              e.log,
	}))
	e.httpsSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
		// HTTP/1.1 only: the websocket upgrade needs it, and IoT Hub's REST clients use it.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	httpsTLS := &tls.Config{Certificates: []tls.Certificate{e.bundle.Server}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	e.workloadSrv = &http.Server{
		Handler:           workload.Handler(workload.Config{Store: e.store, TrustBundle: e.bundle.CAPEM, Logger: e.log}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
	e.serve(e.httpsSrv, tls.NewListener(httpsLn, httpsTLS))
	e.serve(e.workloadSrv, wlLn)

	if err := e.writeEnvFiles(); err != nil {
		e.Close()
		return nil, err
	}
	e.log.Info("emulator ready", "mqtt", e.mqttAddr, "https", e.httpsAddr, "workload", e.WorkloadURI(),
		"hub", opts.HubHostName, "dir", dir)
	return e, nil
}

func (e *Emulator) serve(srv *http.Server, ln net.Listener) {
	e.serveWG.Add(1)
	go func() {
		defer e.serveWG.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("server stopped", "error", err)
		}
	}()
}

// loadState opens the registry, registers the identities and the service policy, and loads
// the certificates.
func (e *Emulator) loadState() error {
	store, err := registry.Open(filepath.Join(e.dir, registry.FileName), time.Now)
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	e.store = store
	for i, id := range e.opts.Identities {
		got, err := store.Ensure(registry.Identity{DeviceID: id.DeviceID, ModuleID: id.ModuleID, Key: id.Key})
		if err != nil {
			return fmt.Errorf("emulator: failed to register %s: %w", registry.ID{Device: id.DeviceID, Module: id.ModuleID}, err)
		}
		if i == 0 || (e.first.Module == "" && got.ModuleID != "") {
			e.first = got.ID()
		}
	}
	e.policy, err = store.EnsurePolicy(ServicePolicyName, e.opts.ServicePolicyKey)
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	hosts := []string{e.opts.Addr, "localhost", e.opts.HubHostName}
	e.bundle, err = certs.Ensure(e.dir, hosts, time.Now())
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	return nil
}

func (e *Emulator) listenWorkload() (net.Listener, error) {
	p := e.opts.WorkloadSocket
	if p == "" {
		p = filepath.Join(e.dir, defaultWorkloadName)
	}
	p, err := filepath.Abs(p)
	if err != nil {
		return nil, fmt.Errorf("emulator: failed to resolve the workload socket path: %w", err)
	}
	if len(p) > maxUnixSocketPathLen {
		return nil, fmt.Errorf("emulator: workload socket path %s is longer than %d bytes; set WorkloadSocket to a shorter path", p, maxUnixSocketPathLen)
	}
	// A socket left by an emulator that did not exit cleanly would make Listen fail.
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSocket != 0 {
		os.Remove(p)
	}
	ln, err := net.Listen("unix", p)
	if err != nil {
		return nil, fmt.Errorf("emulator: failed to listen on the workload socket: %w", err)
	}
	e.workloadPath = p
	return ln, nil
}

// Close stops the listeners, disconnects every client, fails pending method calls with
// ErrClosed and waits for all goroutines. The state folder is kept.
func (e *Emulator) Close() error {
	e.closeOnce.Do(func() {
		errs := []error{e.httpsSrv.Close(), e.workloadSrv.Close(), e.hub.Close()}
		e.serveWG.Wait()
		if err := os.Remove(e.workloadPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		e.closeErr = errors.Join(errs...)
		e.log.Info("emulator stopped")
	})
	return e.closeErr
}

// MQTTAddr returns the host:port of the MQTT/TLS listener.
func (e *Emulator) MQTTAddr() string { return e.mqttAddr }

// HTTPSAddr returns the host:port of the HTTPS listener (REST API and MQTT over WebSockets).
func (e *Emulator) HTTPSAddr() string { return e.httpsAddr }

// MQTTPort returns the MQTT/TLS port (useful when Options.MQTTPort was 0).
func (e *Emulator) MQTTPort() int { return port(e.mqttAddr) }

// HTTPSPort returns the HTTPS port (useful when Options.HTTPSPort was 0).
func (e *Emulator) HTTPSPort() int { return port(e.httpsAddr) }

func port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// HubHostName returns the IoT Hub host name clients must use in usernames and tokens.
func (e *Emulator) HubHostName() string { return e.opts.HubHostName }

// GatewayHostName returns the host name modules connect to (the listen address).
func (e *Emulator) GatewayHostName() string { return e.opts.Addr }

// Dir returns the absolute path of the state folder.
func (e *Emulator) Dir() string { return e.dir }

// WorkloadURI returns the workload API's URI, "unix:///<absolute socket path>".
func (e *Emulator) WorkloadURI() string { return "unix://" + e.workloadPath }

// CAFile returns the absolute path of the CA certificate (PEM) the servers' certificate
// chains to.
func (e *Emulator) CAFile() string { return e.bundle.CAPath }

// CAPool returns a pool holding the CA certificate.
func (e *Emulator) CAPool() *x509.CertPool { return e.bundle.CAPool.Clone() }

// CAPEM returns the CA certificate in PEM form (what the workload API's trust bundle holds).
func (e *Emulator) CAPEM() []byte { return append([]byte(nil), e.bundle.CAPEM...) }

// TLSConfig returns a client TLS configuration that trusts the emulator's CA and verifies the
// server name serverName (the hub or gateway host name).
func (e *Emulator) TLSConfig(serverName string) *tls.Config {
	return &tls.Config{RootCAs: e.CAPool(), ServerName: serverName, MinVersion: tls.VersionTLS12}
}

// Identities returns every registered identity (declared ones, their devices and any found in
// the state folder) with its key.
func (e *Emulator) Identities() []Identity {
	var out []Identity
	for _, i := range e.store.Identities() {
		out = append(out, Identity{DeviceID: i.DeviceID, ModuleID: i.ModuleID, Key: i.Key})
	}
	return out
}

// InvokeMethod calls a direct method on a connected device (moduleID "") or module and returns
// its status and JSON answer. responseTimeout 0 means IoT Hub's default 30 s; any positive
// value is accepted (the REST API enforces 5..300 s). The error is a *HubError for IoT Hub's
// failures (404103 not connected or not subscribed to methods, 504101 no answer in time,
// 400004 payload over 128 KB, 413001 answer over 128 KB, 404001/404010 unknown identity),
// ctx's error, or ErrClosed. A nil payload sends null.
func (e *Emulator) InvokeMethod(ctx context.Context, deviceID, moduleID, method string, payload json.RawMessage, responseTimeout time.Duration) (status int, response json.RawMessage, err error) {
	r, err := e.Invoke(ctx, MethodRequest{DeviceID: deviceID, ModuleID: moduleID, Method: method, Payload: payload, ResponseTimeout: responseTimeout})
	return r.Status, r.Payload, err
}

// Invoke is InvokeMethod with every IoT Hub parameter, including the connect timeout (how
// long to wait for the device to come online).
func (e *Emulator) Invoke(ctx context.Context, req MethodRequest) (MethodResponse, error) {
	return e.hub.InvokeMethod(ctx, req)
}

// Twin returns the desired and reported properties as the device reads them (each with its
// "$version", without "$metadata").
func (e *Emulator) Twin(deviceID, moduleID string) (desired, reported json.RawMessage, err error) {
	return e.hub.DeviceTwin(registry.ID{Device: deviceID, Module: moduleID})
}

// PatchDesired merges patch (a JSON object; null deletes) into the desired properties, pushes
// it to the device if connected and subscribed, and returns the new desired $version.
func (e *Emulator) PatchDesired(deviceID, moduleID string, patch json.RawMessage) (version int, err error) {
	v, err := e.hub.PatchDesired(registry.ID{Device: deviceID, Module: moduleID}, patch)
	return int(v), err
}

// LoseDesiredPatches makes the next n desired patches that would be pushed to
// the identity's connection get lost on the way: the twin changes, the
// device never hears of it, and sees a gap in $version with the next patch
// it does get. A fault for tests (a notification lost across a broken link).
func (e *Emulator) LoseDesiredPatches(deviceID, moduleID string, n int) {
	e.hub.LoseDesiredPatches(registry.ID{Device: deviceID, Module: moduleID}, n)
}

// Connected reports whether the identity has a live MQTT connection.
func (e *Emulator) Connected(deviceID, moduleID string) bool {
	i, _ := e.ConnInfo(deviceID, moduleID)
	return i.Connected
}

// ModelID returns the model id the identity announced in its last connection's username
// ("" if none or never connected).
func (e *Emulator) ModelID(deviceID, moduleID string) string {
	i, _ := e.ConnInfo(deviceID, moduleID)
	return i.ModelID
}

// ConnInfo returns the identity's current or last connection; ok is false if it never
// connected since the emulator started.
func (e *Emulator) ConnInfo(deviceID, moduleID string) (info ConnInfo, ok bool) {
	return e.hub.Info(registry.ID{Device: deviceID, Module: moduleID})
}

// Connects returns how many times the identity connected since the emulator started.
func (e *Emulator) Connects(deviceID, moduleID string) int {
	i, _ := e.ConnInfo(deviceID, moduleID)
	return i.Connects
}

// Disconnect closes the identity's connection, if any, as IoT Hub does (no DISCONNECT packet).
func (e *Emulator) Disconnect(deviceID, moduleID string) {
	e.hub.Disconnect(registry.ID{Device: deviceID, Module: moduleID})
}

// WaitConnected blocks until the identity is connected or ctx ends.
func (e *Emulator) WaitConnected(ctx context.Context, deviceID, moduleID string) error {
	return e.hub.Wait(ctx, func() bool { return e.Connected(deviceID, moduleID) })
}

// WaitConnects blocks until the identity is connected and has connected at least n times
// since the emulator started (n = previous Connects + 1 waits for a reconnect).
func (e *Emulator) WaitConnects(ctx context.Context, deviceID, moduleID string, n int) error {
	return e.hub.Wait(ctx, func() bool {
		i, _ := e.ConnInfo(deviceID, moduleID)
		return i.Connected && i.Connects >= n
	})
}

// Subscribed reports whether the identity is connected and subscribed with exactly this filter,
// e.g. "$iothub/methods/POST/#" (a method call gets 404103 until it is).
func (e *Emulator) Subscribed(deviceID, moduleID, filter string) bool {
	return e.hub.HasSubscription(registry.ID{Device: deviceID, Module: moduleID}, filter)
}

// WaitSubscribed blocks until Subscribed is true or ctx ends.
func (e *Emulator) WaitSubscribed(ctx context.Context, deviceID, moduleID, filter string) error {
	return e.hub.Wait(ctx, func() bool { return e.Subscribed(deviceID, moduleID, filter) })
}

// WaitTwin blocks until cond, called with the twin as Twin returns it after every change,
// returns true, or ctx ends.
func (e *Emulator) WaitTwin(ctx context.Context, deviceID, moduleID string, cond func(desired, reported json.RawMessage) bool) error {
	var terr error
	err := e.hub.Wait(ctx, func() bool {
		d, r, err := e.Twin(deviceID, moduleID)
		if err != nil {
			terr = err
			return true
		}
		return cond(d, r)
	})
	if terr != nil {
		return terr
	}
	return err
}

// WaitConnectedState blocks until Connected equals connected or ctx ends (use false to wait
// for a disconnect).
func (e *Emulator) WaitConnectedState(ctx context.Context, deviceID, moduleID string, connected bool) error {
	return e.hub.Wait(ctx, func() bool { return e.Connected(deviceID, moduleID) == connected })
}
