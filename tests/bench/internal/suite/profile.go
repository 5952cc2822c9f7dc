package suite

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// profile fetches CPU profiles of the module and the relay over the next d
// (with --profile; otherwise it does nothing) into ProfileDir as
// <name>-module.cpu.pprof and <name>-relay.cpu.pprof. The returned function
// waits for them.
func (e *env) profile(ctx context.Context, name string, d time.Duration) (wait func()) {
	if e.opts.ProfileDir == "" {
		return func() {}
	}
	var wg sync.WaitGroup
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	for proc, addr := range map[string]string{"module": e.modulePprof, "relay": e.relayPprof} {
		wg.Go(func() {
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs)
			if err := fetch(ctx, url, filepath.Join(e.opts.ProfileDir, name+"-"+proc+".cpu.pprof")); err != nil {
				e.progress("profile %s of %s: %v", name, proc, err)
			}
		})
	}
	return wg.Wait
}

// heapProfile writes heap profiles of the module and the relay now.
func (e *env) heapProfile(ctx context.Context, name string) {
	if e.opts.ProfileDir == "" {
		return
	}
	for proc, addr := range map[string]string{"module": e.modulePprof, "relay": e.relayPprof} {
		for kind, path := range map[string]string{"heap": "heap?gc=1", "goroutine": "goroutine"} {
			url := fmt.Sprintf("http://%s/debug/pprof/%s", addr, path)
			if err := fetch(ctx, url, filepath.Join(e.opts.ProfileDir, name+"-"+proc+"."+kind+".pprof")); err != nil {
				e.progress("%s profile %s of %s: %v", kind, name, proc, err)
			}
		}
	}
}

func fetch(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
