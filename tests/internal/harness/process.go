package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a running child process whose output lines are kept for
// assertions. Output goes to Echo as well when it is set.
type Process struct {
	// Name labels the process in errors and echoed output. Static.
	Name string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and output is drained
	err  error         // exit error; written before done is closed

	mu      sync.Mutex
	lines   []string      // guarded by mu
	changed chan struct{} // guarded by mu; closed and replaced on every new line
}

// StartOptions tunes Start.
type StartOptions struct {
	// Env is added to the current environment (KEY=VALUE).
	Env []string
	// Echo receives every output line prefixed with the name; nil = none.
	Echo io.Writer
	// Dir is the working directory; empty = current.
	Dir string
}

// Start runs bin with args. The process is killed when ctx is done; call
// Stop or Wait to reap it.
func Start(ctx context.Context, name, bin string, args []string, opts *StartOptions) (*Process, error) {
	if opts == nil {
		opts = &StartOptions{}
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Dir = opts.Dir
	cmd.WaitDelay = 5 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{}), changed: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start %s: %w", name, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
		for sc.Scan() {
			line := sc.Text()
			if opts.Echo != nil {
				fmt.Fprintf(opts.Echo, "[%s] %s\n", name, line)
			}
			p.mu.Lock()
			p.lines = append(p.lines, line)
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		<-scanned
		p.err = err
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Lines returns a copy of the output lines so far.
func (p *Process) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Output returns the output so far as one string.
func (p *Process) Output() string { return strings.Join(p.Lines(), "\n") }

// WaitLine waits until an output line satisfies match and returns it. It
// fails when ctx ends or the process exits first.
func (p *Process) WaitLine(ctx context.Context, match func(string) bool) (string, error) {
	seen := 0
	for {
		p.mu.Lock()
		lines, changed := p.lines[seen:], p.changed
		seen = len(p.lines)
		p.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		select {
		case <-changed:
		case <-p.done:
			p.mu.Lock()
			rest := p.lines[seen:]
			p.mu.Unlock()
			for _, l := range rest {
				if match(l) {
					return l, nil
				}
			}
			return "", fmt.Errorf("%s exited (%v) before the expected output", p.Name, p.err)
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for output of %s: %w", p.Name, ctx.Err())
		}
	}
}

// WaitContains waits for a line containing every one of the substrings.
func (p *Process) WaitContains(ctx context.Context, subs ...string) (string, error) {
	return p.WaitLine(ctx, func(l string) bool {
		for _, s := range subs {
			if !strings.Contains(l, s) {
				return false
			}
		}
		return true
	})
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitCode returns the exit status once Done is closed (-1 when killed by a
// signal).
func (p *Process) ExitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM and waits up to grace for the exit, then kills. It
// returns the exit code and how long the exit took.
func (p *Process) Stop(grace time.Duration) (int, time.Duration, error) {
	start := time.Now()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), 0, nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return -1, 0, fmt.Errorf("failed to signal %s: %w", p.Name, err)
	}
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), time.Since(start), nil
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
		return -1, time.Since(start), fmt.Errorf("%s did not exit within %s of SIGTERM", p.Name, grace)
	}
}
