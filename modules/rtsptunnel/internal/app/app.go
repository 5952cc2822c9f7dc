package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/hub"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/identity"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/report"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/session"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
)

// MethodTunnelOpen is the direct method of the
// dtmi:azure:videoanalyzer:WebSocketTunneling;1 interface.
const MethodTunnelOpen = "tunnelOpen"

// Shutdown budget: IoT Edge (docker stop) waits 10 s before SIGKILL; we aim
// to be done within 5 s even when every step runs into its bound.
const (
	sessionsCloseTimeout = 2500 * time.Millisecond // tunnels closing with 1001
	flushTimeout         = 1 * time.Second         // the final reported state
	hubStopTimeout       = 1 * time.Second         // MQTT disconnect
)

// App is the running module. Set the exported fields and call Run.
type App struct {
	// Settings are the settings at start (from the environment).
	Settings settings.Settings
	// Identity authenticates to IoT Hub or edgeHub.
	Identity *identity.Identity
	// Logger is the root logger; Level is its level, changed live by the
	// logLevel setting.
	Logger *slog.Logger
	Level  *slog.LevelVar
	// Version is reported in the User-Agent and logs.
	Version string

	// Owned by the hub client's desired-property callbacks, which never run
	// concurrently; Run reads them only before the hub client starts and
	// after it has stopped.
	cur        settings.Settings
	metricsSrv *metrics.Server

	// Static once Run has built them.
	reg      *prometheus.Registry
	metrics  *metrics.Metrics
	sessions *session.Manager
	reporter *report.Reporter
}

// Run runs the module until ctx is done, then shuts down in order: stop
// accepting opens, close the tunnels, flush the reported state, disconnect.
// It returns nil after a clean shutdown.
func (a *App) Run(ctx context.Context) error {
	log := a.Logger
	a.cur = a.Settings
	log.Info("rtsptunnel starting", "version", a.Version, "identity", a.Identity.Mode,
		"hub", a.Identity.HubHostName, "gateway", a.Identity.GatewayHostName,
		"device", a.Identity.DeviceID, "module", a.Identity.ModuleID)

	a.reg = prometheus.NewRegistry()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.New(a.reg, metrics.Options{
		IoTHub:     a.Identity.HubHostName,
		EdgeDevice: a.Identity.DeviceID,
		Module:     a.Identity.ModuleID,
	})
	if err != nil {
		return fmt.Errorf("failed to create metrics: %w", err)
	}
	a.metrics = m
	if err := a.startMetricsServer(a.cur.MetricsAddr); err != nil {
		return err
	}
	defer func() {
		if a.metricsSrv != nil {
			a.metricsSrv.Close()
		}
	}()

	a.sessions = &session.Manager{
		Settings: a.cur,
		Logger:   log,
		Metrics:  m,
		Version:  a.Version,
	}
	if err := a.sessions.Initialize(); err != nil {
		return fmt.Errorf("failed to start the session manager: %w", err)
	}

	connected := make(chan struct{}) // closed on the first connection: the reporter's Ready
	firstConnection := sync.OnceFunc(func() { close(connected) })
	client, err := hub.New(hub.Options{
		Identity:           a.Identity,
		RetryMax:           retryMax(a.Identity),
		Transport:          a.cur.HubTransport,
		Port:               a.cur.HubPort,
		TokenLifetime:      a.cur.TokenLifetime,
		ModelID:            hub.DefaultModelID,
		Logger:             log.With("component", "hub"),
		OnConnectionChange: m.SetHubConnected,
		OnTwin:             a.applyTwin,
		OnDesiredPatch:     a.applyPatch,
		OnConnected: func() {
			a.reporter.Republish()
			firstConnection()
		},
	})
	if err != nil {
		return fmt.Errorf("failed to create the IoT Hub client: %w", err)
	}
	client.Handle(MethodTunnelOpen, func(ctx context.Context, payload []byte) (int, []byte) {
		return a.sessions.HandleTunnelOpen(ctx, payload)
	})

	a.reporter = &report.Reporter{
		Source: a.sessions,
		Publisher: report.PublisherFunc(func(ctx context.Context, patch json.RawMessage) error {
			_, err := client.UpdateReported(ctx, patch)
			return err
		}),
		Logger: log.With("component", "report"),
		Ready:  connected,
		// Sessions an earlier run left open (it was killed) are reported
		// closed as module_restarted instead of vanishing.
		Previous: func(ctx context.Context) (json.RawMessage, error) {
			_, reported, err := client.GetTwin(ctx)
			return reported, err
		},
		// Like closed sessions; a zero sessionRetention still reports them
		// closed once before they go.
		OrphanRetention: max(a.cur.SessionRetention, time.Nanosecond),
	}

	// The hub client and the reporter outlive ctx: the final state is
	// flushed through them after the tunnels are closed.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	var wg sync.WaitGroup
	hubErr := make(chan error, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		hubErr <- client.Run(bg)
	}()
	go func() {
		defer wg.Done()
		a.reporter.Run(bg)
	}()

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-hubErr:
		// Run only returns early on a permanent failure (e.g. no token).
		runErr = fmt.Errorf("IoT Hub client stopped: %w", err)
		hubErr <- nil
	}

	closeCtx, cancel := context.WithTimeout(context.Background(), sessionsCloseTimeout)
	if err := a.sessions.Shutdown(closeCtx); err != nil {
		log.Warn("tunnels did not all close in time", "error", err)
	}
	cancel()
	flushCtx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	if err := a.reporter.Flush(flushCtx); err != nil {
		log.Warn("failed to flush the final reported state", "error", err)
	}
	cancel()
	stopBG()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(hubStopTimeout):
		log.Warn("IoT Hub client did not stop in time")
	}
	select {
	case err := <-hubErr:
		if err != nil && !errors.Is(err, context.Canceled) && runErr == nil {
			runErr = err
		}
	default: // still stopping: the process exits anyway
	}
	if runErr == nil {
		log.Info("rtsptunnel stopped")
	}
	return runErr
}

// gatewayRetryMax caps the reconnect backoff when the module connects through
// a gateway (edgeHub) rather than to IoT Hub itself. The gateway runs next to
// the module, so retrying every 1-2 s costs a local TLS handshake, and the
// module is back within 2 s of an edgeHub restart (an update, a deployment).
// IoT Hub itself keeps the hub client's 30 s cap, out of respect for its
// connection throttling when many devices come back at once.
const gatewayRetryMax = 2 * time.Second

// retryMax returns the reconnect backoff cap for id (0: the hub default).
func retryMax(id *identity.Identity) time.Duration {
	if id.Mode != identity.ModeConnectionString || !strings.EqualFold(id.GatewayHostName, id.HubHostName) {
		return gatewayRetryMax
	}
	return 0
}

// applyTwin applies the full desired properties read after a connect. They
// apply on top of the start-up settings, not the current ones, so that a
// property deleted while the module was disconnected returns to its start-up
// value.
func (a *App) applyTwin(desired json.RawMessage) {
	a.applyDesired(a.Settings, desired)
}

// applyPatch applies a pushed desired-properties patch to the current
// settings.
func (a *App) applyPatch(patch json.RawMessage) {
	a.applyDesired(a.cur, patch)
}

// applyDesired applies desired properties to base, acknowledges each with
// the IoT Plug and Play convention, and makes the valid ones live. Called by
// the hub client's desired callbacks, never concurrently.
func (a *App) applyDesired(base settings.Settings, desired json.RawMessage) {
	// No early return when acks is empty: a full twin without settings
	// still returns deleted properties to their start-up values.
	next, acks := base.Apply(desired)
	prev := a.cur
	refuse := func(name string, err error) {
		if ack, ok := acks[name]; ok && ack.AC == 200 {
			ack.AC, ack.AD = 400, err.Error()
			acks[name] = ack
		}
	}
	if next.MetricsAddr != prev.MetricsAddr {
		// A valid address can still be taken: refuse it and keep serving.
		if err := a.moveMetricsServer(prev.MetricsAddr, next.MetricsAddr); err != nil {
			refuse("metricsAddr", err)
			next.MetricsAddr = prev.MetricsAddr
		}
	}
	if err := a.sessions.SetSettings(next); err != nil {
		// The remote CA file became unreadable between validation and use:
		// nothing of this change applies.
		for name := range acks {
			refuse(name, err)
		}
		if next.MetricsAddr != prev.MetricsAddr {
			a.moveMetricsServer(next.MetricsAddr, prev.MetricsAddr)
		}
		next = prev
	}
	a.cur = next
	a.Level.Set(next.SlogLevel())
	if len(acks) > 0 {
		a.reporter.Ack(acks)
	}
	for name, ack := range acks {
		level := slog.LevelInfo
		if ack.AC != 200 {
			level = slog.LevelWarn // rejected: the setting keeps its previous value
		}
		a.Logger.Log(context.Background(), level, "desired property", "name", name, "status", ack.AC, "version", ack.AV, "reason", ack.AD)
	}
}

func (a *App) startMetricsServer(addr string) error {
	if addr == "" {
		return nil
	}
	srv := &metrics.Server{Addr: addr, Gatherer: a.reg, Metrics: a.metrics, Logger: a.Logger.With("component", "metrics")}
	if err := srv.Initialize(); err != nil {
		return err
	}
	a.metricsSrv = srv
	a.Logger.Info("serving metrics", "address", srv.ListenAddr().String())
	return nil
}

// moveMetricsServer restarts the metrics server on addr. The old server is
// closed first (the new address may be the same port spelled differently);
// when addr cannot be bound, the server goes back to old and the error is
// returned.
func (a *App) moveMetricsServer(old, addr string) error {
	if a.metricsSrv != nil {
		a.metricsSrv.Close()
		a.metricsSrv = nil
	}
	err := a.startMetricsServer(addr)
	if err != nil {
		if err2 := a.startMetricsServer(old); err2 != nil {
			a.Logger.Error("failed to restart the metrics server", "error", err2)
		}
	}
	return err
}
