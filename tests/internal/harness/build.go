package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Binary names a main package of the workspace, relative to its root.
type Binary string

// The binaries the end-to-end tests and the demo run.
const (
	Module    Binary = "modules/rtsptunnel"
	Relay     Binary = "relay"
	Emulator  Binary = "tools/edgeemu"
	CameraSim Binary = "tools/camerasim"
)

// Builder builds binaries of the workspace into one folder, each at most once.
// It is safe for concurrent use.
type Builder struct {
	// Dir receives the binaries. Static after construction.
	Dir string
	// Race builds with the race detector, as the tests run.
	Race bool

	mu    sync.Mutex
	built map[Binary]string // guarded by mu
}

// Root returns the workspace root: the folder of the go.work file in use.
func Root() (string, error) {
	out, err := exec.Command("go", "env", "GOWORK").Output()
	if err != nil {
		return "", fmt.Errorf("failed to run go env GOWORK: %w", err)
	}
	work := strings.TrimSpace(string(out))
	if work == "" || work == "off" {
		return "", fmt.Errorf("not inside the go.work workspace (go env GOWORK is %q)", work)
	}
	return filepath.Dir(work), nil
}

// Build compiles b (once) and returns the path of the executable.
func (bd *Builder) Build(ctx context.Context, b Binary) (string, error) {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	if p, ok := bd.built[b]; ok {
		return p, nil
	}
	root, err := Root()
	if err != nil {
		return "", err
	}
	out := filepath.Join(bd.Dir, filepath.Base(string(b)))
	args := []string{"build", "-o", out}
	if bd.Race {
		args = append(args, "-race")
	}
	args = append(args, "./"+string(b))
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("failed to build %s: %w\n%s", b, err, stderr.String())
	}
	if bd.built == nil {
		bd.built = make(map[Binary]string)
	}
	bd.built[b] = out
	return out, nil
}

// TempBuilder returns a Builder writing into a new temporary folder, and a
// function that removes it.
func TempBuilder(race bool) (*Builder, func(), error) {
	dir, err := os.MkdirTemp("", "rtsptunnel-bin-")
	if err != nil {
		return nil, nil, fmt.Errorf("failed to create build folder: %w", err)
	}
	return &Builder{Dir: dir, Race: race}, func() { os.RemoveAll(dir) }, nil
}
