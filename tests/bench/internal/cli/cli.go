// Package cli is the bench command's flags and outputs.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/report"
	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/suite"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
)

// Main runs the command and returns its exit status: 0 when the benchmarks
// ran (targets missed or not), 1 when they could not run, 2 for bad flags.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var (
		o                    suite.Options
		tunnels, only        string
		packetPaced          int
		resultsPath, docsDir string
		render, workdir      string
		keep                 bool
	)
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.Quick, "quick", false, "smoke run: short windows, few samples, at most 100 tunnels; writes to a temporary folder unless --results/--docs are given")
	fs.DurationVar(&o.Window, "duration", 0, "how long each concurrency step holds its tunnels (default 30s, quick 3s)")
	fs.DurationVar(&o.ThroughputWindow, "throughput-duration", 0, "measurement window of each throughput sample (default 5s, quick 1.5s)")
	fs.IntVar(&o.Rounds, "rounds", 0, "throughput rounds; every round measures every path and direction, the median is reported (default 3, quick 1)")
	fs.StringVar(&tunnels, "tunnels", "", "comma-separated tunnel counts of the concurrency test (default 1,10,100,1000; quick 1,10,100)")
	fs.IntVar(&packetPaced, "packet-paced", 0, "add a concurrency step with this many tunnels whose packets are each paced on their own (one write each)")
	fs.BoolVar(&o.DefaultProcs, "gomaxprocs-default", false, "add a step with the most tunnels with the module restarted with Go's default GOMAXPROCS (one per core) instead of its image's GOMAXPROCS=1 (default true; quick false)")
	fs.IntVar(&o.FPS, "fps", 0, "frame rate of the paced streams: a frame's packets go out back to back (default 25)")
	var writes string
	fs.StringVar(&writes, "camera-writes", "", "the camera's write modes, one concurrency series each: writev (a frame's packets with one writev), write (one write per packet, as gortsplib) (default writev,write; quick writev)")
	fs.IntVar(&o.StreamBps, "stream-bitrate", 0, "bit rate of each paced stream (default 1500000)")
	fs.IntVar(&o.Opens, "opens", 0, "one-at-a-time opens for the open latency (default 500, quick 50)")
	fs.IntVar(&o.SustainedOpens, "sustained-opens", 0, "opens for the opens-per-second figure (default 1000, quick 100)")
	fs.IntVar(&o.OpenConcurrency, "open-concurrency", 0, "opens in flight when opening many tunnels (default 32, quick 16)")
	fs.IntVar(&o.RTTSamples, "rtt-samples", 0, "OPTIONS round trips per path and round for the added latency (default 2000, quick 200)")
	fs.IntVar(&o.RTTRounds, "rtt-rounds", 0, "added-latency rounds; each percentile is reported as its median over the rounds (default 3, quick 1)")
	fs.IntVar(&o.IdleTunnels, "idle-tunnels", 0, "tunnels of the idle-memory test (default 1000, quick 100)")
	var fanPlayers string
	fs.StringVar(&fanPlayers, "fanout-players", "", "comma-separated player counts of the fan-out test, ascending, on one shared camera (default 1,10,100)")
	fs.DurationVar(&o.FanoutWindow, "fanout-duration", 0, "measurement window of each fan-out step (default 10s, quick 3s)")
	fs.IntVar(&o.Joins, "joins", 0, "sequential joins timed by the fan-out test, with one viewer and again with the most (default 50, quick 20)")
	fs.StringVar(&only, "only", "", "run only these tests (comma-separated): memory, concurrency, open, rtt, throughput, fanout")
	fs.StringVar(&o.ProfileDir, "profile", "", "build the module and the relay with a pprof hook and write CPU/heap profiles of the heaviest steps to this folder (figures from such a run are not for publishing)")
	fs.StringVar(&resultsPath, "results", "", "where the JSON results go (default <repo>/bench/results.json)")
	fs.StringVar(&docsDir, "docs", "", "folder for benchmarks.md and the charts (default <repo>/docs)")
	fs.StringVar(&render, "render", "", "do not run: render the docs from this results file")
	fs.StringVar(&workdir, "workdir", "", "folder for binaries, certificates and emulator state (default: a temporary folder)")
	fs.BoolVar(&keep, "keep", false, "keep the temporary work folder")
	fs.BoolVar(&o.Verbose, "v", false, "echo every process's output")
	fs.Float64Var(&o.QuietBelow, "quiet-below", 0, "wait until the machine's background load is below this many per cent of one core before starting (shared machines); 0 starts at once")
	fs.DurationVar(&o.QuietWait, "quiet-wait", 30*time.Minute, "how long --quiet-below waits at most")
	fs.Func("module-env", "extra `KEY=VALUE` environment variable of the module, repeatable (experiments: GOMAXPROCS, GOGC ...)", func(v string) error {
		if !strings.Contains(v, "=") {
			return errors.New("want KEY=VALUE")
		}
		o.ModuleEnv = append(o.ModuleEnv, v)
		return nil
	})
	fs.Func("relay-env", "extra `KEY=VALUE` environment variable of the relay, repeatable", func(v string) error {
		if !strings.Contains(v, "=") {
			return errors.New("want KEY=VALUE")
		}
		o.RelayEnv = append(o.RelayEnv, v)
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: scripts/bench [flags]\n\n"+
			"Builds the rtsptunnel module, the relay and chisel %s, runs them on loopback with the IoT Hub\n"+
			"emulator and measures throughput, concurrency, open latency, added latency, memory and the\n"+
			"shared camera's fan-out in one run.\n\nFlags:\n", suite.ChiselVersion)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if !explicit["gomaxprocs-default"] {
		o.DefaultProcs = !o.Quick
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	root, err := harness.Root()
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	if render != "" {
		var res suite.Results
		b, err := os.ReadFile(render)
		if err == nil {
			err = json.Unmarshal(b, &res)
		}
		if err == nil {
			err = report.Write(&res, defaultStr(docsDir, filepath.Join(root, "docs")), relTo(root, render))
		}
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		return 0
	}
	if tunnels != "" {
		for _, f := range strings.Split(tunnels, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 1000 {
				fmt.Fprintf(stderr, "bench: --tunnels: %q is not a count in 1..1000 (the module's maxSessions limit)\n", f)
				return 2
			}
			o.Tunnels = append(o.Tunnels, n)
		}
	}
	if fanPlayers != "" {
		last := 0
		for _, f := range strings.Split(fanPlayers, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= last || n > 1000 {
				fmt.Fprintf(stderr, "bench: --fanout-players: %q is not a count in 1..1000 above the one before\n", f)
				return 2
			}
			last = n
			o.FanoutPlayers = append(o.FanoutPlayers, n)
		}
	}
	if packetPaced < 0 || packetPaced > 1000 {
		fmt.Fprintln(stderr, "bench: --packet-paced: 0..1000")
		return 2
	}
	o.PacketPacedTunnels = packetPaced
	if writes != "" {
		for _, w := range strings.Split(writes, ",") {
			w = strings.TrimSpace(w)
			if w != "writev" && w != "write" {
				fmt.Fprintf(stderr, "bench: --camera-writes: unknown mode %q (writev, write)\n", w)
				return 2
			}
			o.CameraWrites = append(o.CameraWrites, w)
		}
	}
	if only != "" {
		o.Only = map[string]bool{}
		for _, t := range strings.Split(only, ",") {
			t = strings.TrimSpace(t)
			switch t {
			case "memory", "concurrency", "open", "rtt", "throughput", "fanout":
				o.Only[t] = true
			default:
				fmt.Fprintf(stderr, "bench: --only: unknown test %q\n", t)
				return 2
			}
		}
	}
	if o.Quick {
		if resultsPath == "" || docsDir == "" {
			out := filepath.Join(os.TempDir(), "rtsptunnel-bench-quick")
			os.MkdirAll(out, 0o755)
			resultsPath = defaultStr(resultsPath, filepath.Join(out, "results.json"))
			docsDir = defaultStr(docsDir, out)
		}
	}
	resultsPath = defaultStr(resultsPath, filepath.Join(root, "bench", "results.json"))
	docsDir = defaultStr(docsDir, filepath.Join(root, "docs"))
	if o.ProfileDir != "" {
		if err := os.MkdirAll(o.ProfileDir, 0o755); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
	}
	if workdir == "" {
		d, err := os.MkdirTemp("", "rtsptunnel-bench-")
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		workdir = d
		if !keep {
			defer os.RemoveAll(d)
		}
	}
	o.Root, o.WorkDir, o.Progress = root, workdir, stderr
	o.Command = strings.Join(append([]string{"scripts/bench"}, args...), " ")

	res, err := suite.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.MkdirAll(filepath.Dir(resultsPath), 0o755); err == nil {
		err = os.WriteFile(resultsPath, append(b, '\n'), 0o644)
	}
	if err == nil {
		err = report.Write(res, docsDir, relTo(root, resultsPath))
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	fmt.Fprint(stdout, report.Summary(res))
	fmt.Fprintf(stdout, "\nresults: %s\nreport:  %s\n", resultsPath, filepath.Join(docsDir, "benchmarks.md"))
	return 0
}

func defaultStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func relTo(root, p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	if r, err := filepath.Rel(root, abs); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return abs
}
