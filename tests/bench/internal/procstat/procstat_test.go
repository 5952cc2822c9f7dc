package procstat

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestSelf(t *testing.T) {
	pid := os.Getpid()
	c0, err := CPUTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	w, err := StartWindow(10*time.Millisecond, pid)
	if err != nil {
		t.Fatal(err)
	}
	// Burn about 200 ms of CPU.
	end := time.Now().Add(200 * time.Millisecond)
	x := 0
	for time.Now().Before(end) {
		x++
	}
	u, elapsed, machine, err := w.StopMachine()
	if err != nil {
		t.Fatal(err)
	}
	if machine < u[0].CPU*0.5 || machine > 100*float64(runtime.NumCPU())+10 {
		t.Errorf("machine busy %.0f%% with this process at %.0f%%", machine, u[0].CPU)
	}
	c1, _ := CPUTime(pid)
	if c1 <= c0 {
		t.Errorf("CPU time did not grow: %v -> %v", c0, c1)
	}
	if u[0].CPU < 5 || u[0].CPU > 250 { // generous: the machine may be busy
		t.Errorf("busy loop measured %.0f%% of a core over %v", u[0].CPU, elapsed)
	}
	if u[0].RSSMax < 1<<20 || u[0].RSSMean <= 0 || u[0].RSSEnd <= 0 {
		t.Errorf("implausible RSS %+v", u[0])
	}
	if _, err := RSS(1 << 30); err == nil {
		t.Error("RSS of a missing process succeeded")
	}
}

func TestSyscalls(t *testing.T) {
	pid := os.Getpid()
	r0, w0, err := Syscalls(pid)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(t.TempDir() + "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range 10 {
		f.Write([]byte("x"))
	}
	r1, w1, err := Syscalls(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Other goroutines (the runtime, the test framework) may add a few.
	if w1-w0 < 10 || r1 < r0 {
		t.Errorf("writes %d → %d, reads %d → %d: want at least 10 more writes", w0, w1, r0, r1)
	}
}
