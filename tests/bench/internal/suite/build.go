package suite

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ChiselVersion is the chisel release compared against; tools/benchpeers
// pins it with a go tool directive.
const ChiselVersion = "v1.11.3"

//go:embed pprofhook.go.txt
var pprofHook []byte

// binaries are the executables a run uses.
type binaries struct {
	module, relay, emulator, chisel, tlsfwd string
}

// build compiles the module, the relay and the emulator from the workspace at root, and
// chisel from tools/benchpeers (outside the workspace: its dependencies must
// not move the product modules' versions). With profile set, the module and
// the relay get the pprof hook laid over their main package.
func build(ctx context.Context, root, dir string, profile bool) (binaries, error) {
	var b binaries
	var overlay string
	if profile {
		hook := filepath.Join(dir, "pprofhook.go")
		if err := os.WriteFile(hook, pprofHook, 0o644); err != nil {
			return b, err
		}
		m := map[string]map[string]string{"Replace": {
			filepath.Join(root, "modules/rtsptunnel/zz_bench_pprof.go"): hook,
			filepath.Join(root, "relay/zz_bench_pprof.go"):              hook,
		}}
		j, _ := json.Marshal(m)
		overlay = filepath.Join(dir, "overlay.json")
		if err := os.WriteFile(overlay, j, 0o644); err != nil {
			return b, err
		}
	}
	goBuild := func(workdir, out, pkg string, hooked bool, env []string, extra ...string) error {
		args := append([]string{"build", "-trimpath", "-o", out}, extra...)
		if overlay != "" && hooked {
			args = append(args, "-overlay", overlay)
		}
		args = append(args, pkg)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = workdir
		cmd.Env = append(os.Environ(), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("failed to build %s: %w\n%s", pkg, err, stderr.String())
		}
		return nil
	}
	b.module = filepath.Join(dir, "rtsptunnel")
	if err := goBuild(root, b.module, "./modules/rtsptunnel", true, nil); err != nil {
		return b, err
	}
	b.relay = filepath.Join(dir, "relay")
	if err := goBuild(root, b.relay, "./relay", true, nil); err != nil {
		return b, err
	}
	b.emulator = filepath.Join(dir, "edgeemu")
	if err := goBuild(root, b.emulator, "./tools/edgeemu", false, nil); err != nil {
		return b, err
	}
	b.tlsfwd = filepath.Join(dir, "tlsfwd")
	if err := goBuild(root, b.tlsfwd, "./tests/bench/cmd/tlsfwd", false, nil); err != nil {
		return b, err
	}
	b.chisel = filepath.Join(dir, "chisel")
	if err := goBuild(filepath.Join(root, "tools/benchpeers"), b.chisel, "github.com/jpillora/chisel", false,
		[]string{"GOWORK=off"},
		"-ldflags", "-X github.com/jpillora/chisel/share.BuildVersion="+ChiselVersion); err != nil {
		return b, err
	}
	return b, nil
}
