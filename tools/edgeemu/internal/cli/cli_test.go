package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHelpAndREADMEDocumentEveryFlag fails when a flag is missing from --help or the README.
func TestHelpAndREADMEDocumentEveryFlag(t *testing.T) {
	var out bytes.Buffer
	if code := Run(context.Background(), []string{"--help"}, io.Discard, &out); code != 0 {
		t.Fatalf("--help exit code %d", code)
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var s settings
	newFlagSet(&s, io.Discard).VisitAll(func(f *flag.Flag) {
		if !strings.Contains(out.String(), "-"+f.Name+" ") && !strings.Contains(out.String(), "-"+f.Name+"\n") {
			t.Errorf("--help does not document --%s", f.Name)
		}
		if f.Usage == "" {
			t.Errorf("--%s has no usage text", f.Name)
		}
		if !bytes.Contains(readme, []byte("`--"+f.Name)) {
			t.Errorf("README.md does not document --%s", f.Name)
		}
	})
}

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "d/m", want: "d/m"},
		{in: "d", want: "d/"},
		{in: "d/m=YWJj", want: "d/m key=abc"},
		{in: "d/m=!!", wantErr: true},
		{in: "/m", wantErr: true},
		{in: "d/", wantErr: true},
		{in: "d/m/x", wantErr: true},
		{in: "d=", wantErr: true},
	}
	for _, tt := range tests {
		id, err := parseIdentity(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("%q: no error", tt.in)
			}
			continue
		}
		got := id.DeviceID + "/" + id.ModuleID
		if id.Key != nil {
			got += " key=" + string(id.Key)
		}
		if err != nil || got != tt.want {
			t.Errorf("%q = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestRunReadyAndShutdown(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfg, []byte(`{"identities":[{"deviceId":"cam-gw","moduleId":"tunnel","key":"YWJjZA=="}],"trustedBearerTokens":["t"],"maxTokenLifetime":"1m"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdoutR, stdoutW := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"--dir", filepath.Join(dir, "state"), "--addr", "127.0.0.1", "--mqtt-port", "0", "--https-port", "0",
			"--config", cfg, "--device", "sensor", "--log-level", "debug"}, stdoutW, io.Discard)
		stdoutW.Close()
	}()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdoutR)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var ready struct {
		Ready       bool
		MQTT, HTTPS string
		WorkloadURI string `json:"workloadUri"`
		Dir         string
	}
	select {
	case l := <-lines:
		if err := json.Unmarshal([]byte(l), &ready); err != nil || !ready.Ready || ready.MQTT == "" || ready.HTTPS == "" {
			t.Fatalf("ready line %q: %v", l, err)
		}
	case code := <-done:
		t.Fatalf("exited with %d before the ready line", code)
	case <-time.After(20 * time.Second):
		t.Fatal("no ready line")
	}
	env, err := os.ReadFile(filepath.Join(ready.Dir, "module.env"))
	if err != nil || !strings.Contains(string(env), "IOTEDGE_DEVICEID=cam-gw\n") || !strings.Contains(string(env), "IOTEDGE_MODULEID=tunnel\n") {
		t.Errorf("module.env from the config file: %s %v", env, err)
	}
	dev, err := os.ReadFile(filepath.Join(ready.Dir, "device.env"))
	if err != nil || !strings.Contains(string(dev), "DeviceId=sensor;") {
		t.Errorf("device.env from --device: %s %v", dev, err)
	}
	cancel() // what SIGTERM does in main
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no clean shutdown")
	}
	if _, err := os.Stat(strings.TrimPrefix(ready.WorkloadURI, "unix://")); err == nil {
		t.Error("workload socket left behind")
	}
}

func TestRunRefuses(t *testing.T) {
	dir := t.TempDir()
	tests := [][]string{
		{},                                   // no --dir
		{"--dir", dir, "--addr", "10.1.2.3"}, // not loopback
		{"--dir", dir, "--module", "nodevice"},
		{"--dir", dir, "--device", "d/m"},
		{"--dir", dir, "--bogus"},
		{"--dir", dir, "--log-level", "loud"},
		{"--dir", dir, "--config", filepath.Join(dir, "missing.json")},
		{"--dir", dir, "extra"},
	}
	for _, args := range tests {
		if code := Run(context.Background(), args, io.Discard, io.Discard); code == 0 {
			t.Errorf("%q: exit code 0", args)
		}
	}
}
