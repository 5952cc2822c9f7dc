// Package cli is the edgeemu command line: flags (and an optional JSON config file) to
// emulator.Options, a ready line on stdout, JSON logs on stderr, clean shutdown when the
// context ends.
package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/emulator"
)

// identityList is a repeatable flag of "device[/module][=base64key]".
type identityList struct {
	ids        *[]emulator.Identity
	wantModule bool
}

func (l identityList) String() string { return "" }

func (l identityList) Set(s string) error {
	id, err := parseIdentity(s)
	if err != nil {
		return err
	}
	if l.wantModule != (id.ModuleID != "") {
		if l.wantModule {
			return fmt.Errorf("%q is not device/module[=key]", s)
		}
		return fmt.Errorf("%q is not device[=key] (use --module for modules)", s)
	}
	*l.ids = append(*l.ids, id)
	return nil
}

func parseIdentity(s string) (emulator.Identity, error) {
	name, key, hasKey := strings.Cut(s, "=")
	dev, mod, _ := strings.Cut(name, "/")
	if dev == "" || strings.Contains(mod, "/") || (strings.Contains(name, "/") && mod == "") {
		return emulator.Identity{}, fmt.Errorf("%q is not device[/module][=base64key]", s)
	}
	id := emulator.Identity{DeviceID: dev, ModuleID: mod}
	if hasKey {
		k, err := decodeKey(key)
		if err != nil {
			return emulator.Identity{}, fmt.Errorf("%q: %w", s, err)
		}
		id.Key = k
	}
	return id, nil
}

func decodeKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(k) == 0 {
		return nil, errors.New("the key must be non-empty base64")
	}
	return k, nil
}

// stringList is a repeatable string flag.
type stringList struct{ s *[]string }

func (l stringList) String() string     { return "" }
func (l stringList) Set(v string) error { *l.s = append(*l.s, v); return nil }

// fileConfig is the --config file: the same settings as the flags, which override it.
type fileConfig struct {
	Addr                string   `json:"addr"`
	HubHostName         string   `json:"hubHostName"`
	MQTTPort            *int     `json:"mqttPort"`
	HTTPSPort           *int     `json:"httpsPort"`
	Dir                 string   `json:"dir"`
	WorkloadSocket      string   `json:"workloadSocket"`
	ServiceKey          string   `json:"serviceKey"`
	MaxTokenLifetime    string   `json:"maxTokenLifetime"`
	TokenCheckInterval  string   `json:"tokenCheckInterval"`
	NoStoreAndForward   bool     `json:"noStoreAndForward"`
	TrustedBearerTokens []string `json:"trustedBearerTokens"`
	AllowNonLoopback    bool     `json:"allowNonLoopback"`
	Identities          []struct {
		DeviceID string `json:"deviceId"`
		ModuleID string `json:"moduleId"`
		Key      string `json:"key"`
	} `json:"identities"`
}

type settings struct {
	opts       emulator.Options
	configPath string
	serviceKey string
	logLevel   string
}

// newFlagSet declares every flag; the usage text documents each one.
func newFlagSet(s *settings, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("edgeemu", flag.ContinueOnError)
	fs.SetOutput(out)
	o := &s.opts
	fs.StringVar(&o.Addr, "addr", emulator.DefaultAddr, "loopback IP address to listen on (also the gateway host name given to modules)")
	fs.StringVar(&o.HubHostName, "hub-hostname", "", "IoT Hub host name clients use in usernames and tokens (default: the address)")
	fs.IntVar(&o.MQTTPort, "mqtt-port", emulator.StandardMQTTPort, "MQTT over TLS port (0 = any free port)")
	fs.IntVar(&o.HTTPSPort, "https-port", emulator.StandardHTTPSPort, "HTTPS port for the service REST API and MQTT over WebSockets (0 = any free port)")
	fs.StringVar(&o.Dir, "dir", "", "state folder: certificates, identities, twins and the *.env files (required)")
	fs.StringVar(&o.WorkloadSocket, "workload-socket", "", "unix socket of the workload API (default: <dir>/workload.sock)")
	fs.Var(identityList{&o.Identities, true}, "module", "register a module, device/module[=base64key]; repeatable (default: edge-device/rtsptunnel); the first one is written to module.env and hubdev.env")
	fs.Var(identityList{&o.Identities, false}, "device", "register a device, device[=base64key]; repeatable; the first one is written to device.env")
	fs.StringVar(&s.serviceKey, "service-key", "", "base64 key of the \"service\" shared access policy (default: kept from the state folder or generated)")
	fs.DurationVar(&o.MaxTokenLifetime, "max-token-lifetime", 0, "disconnect clients this long after they connect even if their SAS token lasts longer, e.g. 2m (0 = honour the token)")
	fs.DurationVar(&o.TokenCheckInterval, "token-check-interval", emulator.DefaultTokenCheckInterval, "how often clients whose token expired are disconnected (edgeHub: 5m)")
	fs.BoolVar(&o.NoStoreAndForward, "no-store-and-forward", false, "behave as edgeHub with storeAndForwardEnabled=false: persistent sessions' subscriptions are not restored on reconnect")
	fs.Var(stringList{&o.TrustedBearerTokens}, "trusted-bearer-token", "accept \"Authorization: Bearer <token>\" with this token on the REST API (stands in for Entra ID); repeatable")
	fs.BoolVar(&o.AllowNonLoopback, "allow-nonloopback", false, "allow --addr to be a non-loopback address")
	fs.StringVar(&s.configPath, "config", "", "JSON file with the same settings (addr, hubHostName, mqttPort, httpsPort, dir, workloadSocket, serviceKey, maxTokenLifetime, tokenCheckInterval, noStoreAndForward, trustedBearerTokens, allowNonLoopback, identities: [{deviceId, moduleId, key}]); flags override it")
	fs.StringVar(&s.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(out, `edgeemu: an offline Azure IoT Hub + edgeHub + IoT Edge workload API emulator.

Usage: edgeemu --dir <state folder> [flags]

It serves MQTT 3.1.1 over TLS, HTTPS (service REST API and MQTT over WebSockets at
/$iothub/websocket) and the workload API (unix socket), writes module.env, hubdev.env,
device.env and service.env into --dir, prints one JSON ready line on stdout once listening,
logs JSON lines on stderr, and exits cleanly on SIGINT or SIGTERM.

Flags:
`)
		fs.PrintDefaults()
	}
	return fs
}

// Run runs the emulator until ctx ends and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var s settings
	fs := newFlagSet(&s, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edgeemu: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := s.applyConfig(fs); err != nil {
		fmt.Fprintf(stderr, "edgeemu: %v\n", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.logLevel)); err != nil {
		fmt.Fprintf(stderr, "edgeemu: --log-level: %v\n", err)
		return 2
	}
	if s.serviceKey != "" {
		k, err := decodeKey(s.serviceKey)
		if err != nil {
			fmt.Fprintf(stderr, "edgeemu: --service-key: %v\n", err)
			return 2
		}
		s.opts.ServicePolicyKey = k
	}
	if s.opts.Dir == "" {
		fmt.Fprintln(stderr, "edgeemu: --dir is required")
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	s.opts.Logger = log

	e, err := emulator.New(s.opts)
	if err != nil {
		log.Error("failed to start", "error", err.Error())
		return 1
	}
	ready, _ := json.Marshal(map[string]any{
		"ready":       true,
		"mqtt":        e.MQTTAddr(),
		"https":       e.HTTPSAddr(),
		"workloadUri": e.WorkloadURI(),
		"hubHostName": e.HubHostName(),
		"dir":         e.Dir(),
		"caFile":      e.CAFile(),
	})
	fmt.Fprintln(stdout, string(ready))

	<-ctx.Done()
	log.Info("shutting down", "cause", context.Cause(ctx).Error())
	if err := e.Close(); err != nil {
		log.Error("shutdown failed", "error", err.Error())
		return 1
	}
	return 0
}

// applyConfig merges the --config file under the flags that were set explicitly.
func (s *settings) applyConfig(fs *flag.FlagSet) error {
	if s.configPath == "" {
		return nil
	}
	data, err := os.ReadFile(s.configPath)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var c fileConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return fmt.Errorf("--config %s: %w", s.configPath, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o := &s.opts
	str := func(flagName string, dst *string, v string) {
		if !set[flagName] && v != "" {
			*dst = v
		}
	}
	str("addr", &o.Addr, c.Addr)
	str("hub-hostname", &o.HubHostName, c.HubHostName)
	str("dir", &o.Dir, c.Dir)
	str("workload-socket", &o.WorkloadSocket, c.WorkloadSocket)
	str("service-key", &s.serviceKey, c.ServiceKey)
	if !set["mqtt-port"] && c.MQTTPort != nil {
		o.MQTTPort = *c.MQTTPort
	}
	if !set["https-port"] && c.HTTPSPort != nil {
		o.HTTPSPort = *c.HTTPSPort
	}
	if !set["max-token-lifetime"] && c.MaxTokenLifetime != "" {
		d, err := time.ParseDuration(c.MaxTokenLifetime)
		if err != nil {
			return fmt.Errorf("--config: maxTokenLifetime: %w", err)
		}
		o.MaxTokenLifetime = d
	}
	if !set["token-check-interval"] && c.TokenCheckInterval != "" {
		d, err := time.ParseDuration(c.TokenCheckInterval)
		if err != nil {
			return fmt.Errorf("--config: tokenCheckInterval: %w", err)
		}
		o.TokenCheckInterval = d
	}
	if !set["no-store-and-forward"] && c.NoStoreAndForward {
		o.NoStoreAndForward = true
	}
	if !set["allow-nonloopback"] && c.AllowNonLoopback {
		o.AllowNonLoopback = true
	}
	o.TrustedBearerTokens = append(c.TrustedBearerTokens, o.TrustedBearerTokens...)
	var ids []emulator.Identity
	for _, i := range c.Identities {
		if i.DeviceID == "" {
			return fmt.Errorf("--config: an identity has no deviceId")
		}
		id := emulator.Identity{DeviceID: i.DeviceID, ModuleID: i.ModuleID}
		if i.Key != "" {
			k, err := decodeKey(i.Key)
			if err != nil {
				return fmt.Errorf("--config: identity %s: %w", i.DeviceID, err)
			}
			id.Key = k
		}
		ids = append(ids, id)
	}
	o.Identities = append(ids, o.Identities...)
	return nil
}
