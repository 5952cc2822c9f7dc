package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
)

// scriptsRoot returns the workspace root, where scripts/ lives.
func scriptsRoot(t *testing.T) string {
	t.Helper()
	root, err := harness.Root()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// fakeTools writes executables named names into a new folder that record
// their call in calls.log and fail, and returns the folder.
func fakeTools(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		script := "#!/bin/sh\necho \"" + n + " $*\" >>\"" + filepath.Join(dir, "calls.log") + "\"\nexit 1\n"
		if err := os.WriteFile(filepath.Join(dir, n), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestScriptsParse(t *testing.T) {
	root := scriptsRoot(t)
	files, err := filepath.Glob(filepath.Join(root, "scripts", "*.sh"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		if out, err := exec.Command("bash", "-n", f).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", f, err, out)
		}
	}
}

// TestDemoHelpInstallsNothing: `scripts/demo.sh --help` prints the driver's
// usage without running apt-get, sudo or npm.
func TestDemoHelpInstallsNothing(t *testing.T) {
	root := scriptsRoot(t)
	fakes := fakeTools(t, "apt-get", "sudo", "npm")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "demo.sh"), "--help")
	cmd.Env = append(os.Environ(), "PATH="+fakes+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo.sh --help: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Usage: scripts/demo.sh") || strings.Contains(string(out), "==> ") {
		t.Errorf("demo.sh --help printed:\n%s", out)
	}
	if calls, err := os.ReadFile(filepath.Join(fakes, "calls.log")); err == nil {
		t.Errorf("demo.sh --help ran installers:\n%s", calls)
	}
}

// TestTestScriptRunsEveryStage: a failing go vet and go test do not stop
// scripts/test.sh; it prints every stage in its summary and exits non-zero.
func TestTestScriptRunsEveryStage(t *testing.T) {
	root := scriptsRoot(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	fakes := t.TempDir()
	fakeGo := "#!/bin/sh\ncase $1 in vet|test) echo \"fake go $1 fails\"; exit 1;; esac\nexec " + goBin + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(fakes, "go"), []byte(fakeGo), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "test.sh"))
	cmd.Env = append(os.Environ(), "PATH="+fakes+":"+os.Getenv("PATH"),
		"SKIP_SETUP=1", "SKIP_FUZZ=1", "SKIP_VULNCHECK=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("test.sh passed with a failing go test:\n%s", out)
	}
	_, summary, ok := strings.Cut(string(out), "==> summary")
	if !ok {
		t.Fatalf("no summary:\n%s", out)
	}
	for _, want := range []string{"gofmt", "FAIL  go vet", "FAIL  go test -race", "skip  fuzz (SKIP_FUZZ=1)", "skip  govulncheck (SKIP_VULNCHECK=1)", "test.sh: FAILED"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
}
