package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRunFlags(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr []string
	}{
		{"help", []string{"--help"}, 0, []string{"-addr", "-path", "-user", "-pass", "-log-level", "camerasim ready"}},
		{"unknown flag", []string{"--nope"}, 2, []string{"flag provided but not defined"}},
		{"stray argument", []string{"extra"}, 2, []string{`unexpected argument "extra"`}},
		{"bad log level", []string{"--log-level", "loud"}, 2, []string{"invalid --log-level"}},
		{"password without user", []string{"--addr", "127.0.0.1:0", "--pass", "x"}, 1, []string{`"level":"ERROR"`, "without a user"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdout, stderr strings.Builder
			if code := run(ctx, tt.args, &stdout, &stderr); code != tt.wantCode {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
		})
	}
}

// TestRunServes starts the command on a free port, waits for its ready line, checks
// that it accepts an RTSP request, and stops it as a signal would.
func TestRunServes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()

	outR, outW := io.Pipe()
	var stderr strings.Builder
	done := make(chan int, 1)
	go func() {
		defer outW.Close()
		done <- run(runCtx, []string{"--addr", "127.0.0.1:0", "--path", "cam", "--log-level", "debug"}, outW, &stderr)
	}()

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	var url string
	select {
	case line := <-lines:
		var ok bool
		url, ok = strings.CutPrefix(line, "camerasim ready ")
		if !ok || !strings.HasPrefix(url, "rtsp://127.0.0.1:") || !strings.HasSuffix(url, "/cam") {
			t.Fatalf("unexpected ready line %q", line)
		}
	case code := <-done:
		t.Fatalf("exited with %d before being ready: %s", code, stderr.String())
	case <-ctx.Done():
		t.Fatal("no ready line")
	}

	host := strings.TrimSuffix(strings.TrimPrefix(url, "rtsp://"), "/cam")
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "OPTIONS "+url+" RTSP/1.0\r\nCSeq: 1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "RTSP/1.0 200") {
		t.Fatalf("OPTIONS answered %q, %v", status, err)
	}

	stop() // as SIGTERM does
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d, want 0", code)
		}
	case <-ctx.Done():
		t.Fatal("did not exit after the signal")
	}
	for _, want := range []string{`"msg":"camera listening"`, `"msg":"shutting down"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, stderr.String())
		}
	}
}
