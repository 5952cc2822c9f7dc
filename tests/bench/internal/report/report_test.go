package report

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/procstat"
	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/suite"
)

// sample is a small but complete result set.
func sample() *suite.Results {
	r := &suite.Results{
		Meta: suite.Meta{Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Command: "scripts/bench", Cores: 2,
			ChiselVersion: suite.ChiselVersion, Settings: map[string]any{"rounds": 3, "chunkBytes": 1400}},
		Ratios: map[string]float64{"rtsptunnelVsChisel_down": 4.2, "rtsptunnelVsRaw_down": 0.2},
	}
	for _, p := range []string{"raw", "chisel", "rtsptunnel"} {
		for _, d := range []string{"down", "up"} {
			r.Throughput = append(r.Throughput, suite.ThroughputResult{Path: p, Direction: d, MBps: 100, Samples: []float64{90, 100, 110},
				CPU: map[string]float64{"harness": 50, "module": 60}, Machine: 190})
		}
	}
	for _, writev := range []bool{true, false} {
		for _, n := range []int{1, 10, 100, 1000} {
			r.Concurrency = append(r.Concurrency, suite.ConcurrencyResult{Tunnels: n, Pacing: "frame", FPS: 25, Writev: writev,
				TargetBps: 1.5e6, Window: 30 * time.Second, OpenTime: time.Second, OpensPerSec: float64(n), MeanBps: 1.5e6, MinBps: 1.49e6,
				AtFullRate: n, Module: procstat.Usage{CPU: float64(n) / 20, RSSMax: 20 << 20}, Relay: procstat.Usage{CPU: 3, RSSMax: 30 << 20}})
		}
	}
	r.OpenLatency = &suite.OpenLatencyResult{FirstByte: suite.Percentiles{N: 500, P50: 4, P99: 12}, Sustained: suite.SustainedOpens{Opens: 1000, Concurrency: 32, PerSec: 300}}
	r.AddedLatency = &suite.AddedLatencyResult{Direct: suite.Percentiles{N: 2000, P50: 0.05}, Tunnel: suite.Percentiles{P50: 0.4}, AddedP50: 0.35}
	r.Memory = &suite.MemoryResult{Tunnels: 1000, ModuleBaseline: 17 << 20, ModuleIdle: 67 << 20, ModuleIdlePerTun: 50 << 10,
		ActiveTunnels: 1000, ModuleActive: 120 << 20, Runtime: map[string]float64{"module.goroutines": 4021}}
	r.Fanout = &suite.FanoutResult{Camera: "an RTSP camera", StreamBps: 1.5e6, FPS: 25, Window: 10 * time.Second, Warmup: 2 * time.Second,
		MethodCallsAtOpen: 1, RelayTunnelsMax: 1, ModuleTunnelsMax: 1, CameraSessions: 1,
		Join: &suite.JoinResult{Viewers: 1, FirstPacket: suite.Percentiles{N: 50, P50: 23.5}}}
	for i, n := range []int{1, 10, 100} {
		st := suite.FanoutStep{Players: n, EdgeBps: 190e3, ToPlayersBps: float64(n) * 189e3, Fanout: float64(n), Relay: procstat.Usage{CPU: 2 + 0.12*float64(n-1)}}
		if i > 0 {
			st.RelayCPUPerPlayer = 0.12
		}
		r.Fanout.Steps = append(r.Fanout.Steps, st)
	}
	r.Targets = []suite.Target{{Name: "sustained opens", Goal: "≥ 200/s", Measured: "300/s", Met: true}}
	return r
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	if err := Write(sample(), dir, "bench/results.json"); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, MarkdownFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Benchmarks", "## 1. Throughput", "## 2. Concurrent", "**Camera: a writev per frame**",
		"**Camera: a write per packet**", "## 3. Open latency", "## 4. Added", "## 5. Memory", "**50 KiB**", "](../bench/results.json)",
		"4.20×", "| sustained opens | ≥ 200/s | 300/s | **yes** |",
		"## 6. Fan-out", "| 100 | 190.0 | 18900.0 | 100.0× |", "0.12% / 0 KiB", "**23.5 ms** with 1 watching (target ≤ 50 ms: **met**)", ": as it should."} {
		if !strings.Contains(string(md), want) {
			t.Errorf("benchmarks.md lacks %q", want)
		}
	}
	for _, f := range []string{ThroughputChart, ConcurrencyPNG} {
		b, err := os.Open(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(b); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		b.Close()
	}
	if s := Summary(sample()); !strings.Contains(s, "sustained opens") {
		t.Errorf("summary %q", s)
	}
}

// TestWriteKeepsHandWritten: a full run rewrites benchmarks.md but keeps the
// browser section and its target row, which `scripts/bench --webrtc`
// measures and a person writes down.
func TestWriteKeepsHandWritten(t *testing.T) {
	dir := t.TempDir()
	section := keptHeading + "\n\nfigures from scripts/bench --webrtc\n\n| measure | result |\n|---|---|\n| join | 4 ms |\n\n"
	row := keptRow + "join p50 | ≤ 100 ms | 4.2 ms | **yes** |"
	old := "# Benchmarks\n\n## Where we are against the targets\n\n| target | goal | measured | met |\n|---|---|---|---|\n| old | x | y | no |\n" +
		row + "\n\n## 6. Fan-out\n\nold fan-out\n\n" + section + "## Reproducing\n\nold\n"
	if err := os.WriteFile(filepath.Join(dir, MarkdownFile), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 { // and a second run keeps it exactly once
		if err := Write(sample(), dir, "bench/results.json"); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, MarkdownFile))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	if strings.Count(md, section) != 1 || strings.Count(md, row) != 1 {
		t.Fatalf("hand-written section or row not kept exactly once:\n%s", md)
	}
	if strings.Contains(md, "old fan-out") || strings.Contains(md, "| old | x |") {
		t.Error("generated parts of the old file survived")
	}
	if !(strings.Index(md, "| sustained opens |") < strings.Index(md, row) &&
		strings.Index(md, "## 6. Fan-out") < strings.Index(md, keptHeading) &&
		strings.Index(md, keptHeading) < strings.Index(md, "## Reproducing")) {
		t.Errorf("kept parts out of place:\n%s", md)
	}
}
