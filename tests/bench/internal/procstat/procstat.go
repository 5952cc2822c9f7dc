// Package procstat reads a Linux process's CPU time and resident memory from
// /proc, for the benchmark's per-process CPU and RSS figures.
//
// CPU is utime+stime of /proc/<pid>/stat (all threads, in clock ticks of
// 1/100 s on Linux), so a figure over a window of W seconds is exact to
// 10 ms / W. RSS is VmRSS of /proc/<pid>/status.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, fixed at 100 on every Linux architecture Go supports.
const clockTicks = 100

// CPUTime returns the CPU time (user + system) pid has used so far.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("failed to read process stat: %w", err)
	}
	// The command name (field 2) is in parentheses and may contain spaces:
	// fields are counted after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state is field 3, so utime (14) and stime (15) are f[11], f[12].
	if len(f) < 13 {
		return 0, errors.New("malformed /proc stat: too few fields")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc stat: utime/stime")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// RSS returns pid's resident set size in bytes (VmRSS).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("failed to read process status: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("malformed VmRSS line %q", line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("malformed VmRSS line %q", line)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS in process status (a zombie?)")
}

// Syscalls returns how many read and write system calls pid has made so
// far (syscr and syscw of /proc/<pid>/io: read, readv, recvmsg ... and
// write, writev, sendmsg ...; reading another user's process needs the
// same user or root).
func Syscalls(pid int) (reads, writes int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("failed to read process io: %w", err)
	}
	var seen int
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, perr := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "syscr":
			reads, err, seen = n, perr, seen+1
		case "syscw":
			writes, err, seen = n, errors.Join(err, perr), seen+1
		}
	}
	if err != nil || seen != 2 {
		return 0, 0, errors.New("malformed /proc io")
	}
	return reads, writes, nil
}

// MachineCPU returns the CPU time all CPUs have spent busy (user, nice,
// system, irq, softirq, steal) and idle (idle, iowait) since boot, from the
// first line of /proc/stat.
func MachineCPU() (busy, idle time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("failed to read /proc/stat: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, errors.New("malformed /proc/stat")
	}
	var v [8]int64
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return 0, 0, errors.New("malformed /proc/stat")
		}
	}
	// user nice system idle iowait irq softirq steal
	tick := func(t int64) time.Duration { return time.Duration(t) * time.Second / clockTicks }
	return tick(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]), tick(v[3] + v[4]), nil
}

// Usage is what a Window measured for one process.
type Usage struct {
	// CPU is the CPU time used in the window as a percentage of one core.
	CPU float64 `json:"cpuPercentOfOneCore"`
	// RSSMax and RSSMean are the resident set size sampled through the
	// window (bytes): the largest sample and the mean.
	RSSMax  int64 `json:"rssMaxBytes"`
	RSSMean int64 `json:"rssMeanBytes"`
	// RSSEnd is the last sample.
	RSSEnd int64 `json:"rssEndBytes"`
}

// Window measures processes over a time window: CPU from the first to the
// last reading, RSS sampled every interval. Start it with StartWindow and end
// it with Stop.
type Window struct {
	pids  []int
	start time.Time
	cpu0  []time.Duration
	busy0 time.Duration // machine-wide
	stop  chan struct{}
	done  chan struct{}

	mu      sync.Mutex // guards samples
	samples [][]int64
}

// StartWindow takes the first CPU reading of every pid and starts sampling RSS
// every interval.
func StartWindow(interval time.Duration, pids ...int) (*Window, error) {
	w := &Window{pids: pids, stop: make(chan struct{}), done: make(chan struct{}), samples: make([][]int64, len(pids))}
	for _, p := range pids {
		c, err := CPUTime(p)
		if err != nil {
			return nil, err
		}
		w.cpu0 = append(w.cpu0, c)
	}
	w.busy0, _, _ = MachineCPU()
	w.start = time.Now()
	w.sample()
	go func() {
		defer close(w.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.sample()
			}
		}
	}()
	return w, nil
}

func (w *Window) sample() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, p := range w.pids {
		if r, err := RSS(p); err == nil {
			w.samples[i] = append(w.samples[i], r)
		}
	}
}

// Stop ends the window and returns each pid's usage, in StartWindow's order,
// and the window's length.
func (w *Window) Stop() ([]Usage, time.Duration, error) {
	u, elapsed, _, err := w.StopMachine()
	return u, elapsed, err
}

// StopMachine is Stop that also returns the whole machine's busy CPU time
// over the window, as a percentage of one core (all processes, the kernel's
// own work and time stolen by the hypervisor).
func (w *Window) StopMachine() ([]Usage, time.Duration, float64, error) {
	close(w.stop)
	<-w.done
	w.sample()
	busy1, _, _ := MachineCPU()
	elapsed := time.Since(w.start)
	machine := 100 * (busy1 - w.busy0).Seconds() / elapsed.Seconds()
	out := make([]Usage, len(w.pids))
	for i, p := range w.pids {
		c, err := CPUTime(p)
		if err != nil {
			return nil, elapsed, machine, err
		}
		u := Usage{CPU: 100 * (c - w.cpu0[i]).Seconds() / elapsed.Seconds()}
		var sum int64
		for _, r := range w.samples[i] {
			sum += r
			u.RSSMax = max(u.RSSMax, r)
		}
		if n := len(w.samples[i]); n > 0 {
			u.RSSMean = sum / int64(n)
			u.RSSEnd = w.samples[i][n-1]
		}
		out[i] = u
	}
	return out, elapsed, machine, nil
}
