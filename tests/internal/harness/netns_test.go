package harness

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
)

// TestSweepNetNS: a namespace whose maker has exited goes; one whose maker
// runs and one with another prefix stay.
func TestSweepNetNS(t *testing.T) {
	if err := NetNSUsable(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	// A pid that no process has any more: a child that has been reaped.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	stale := "sweeptest-" + strconv.Itoa(dead) + "-0000"
	staleOther := "sweepother-" + strconv.Itoa(dead) + "-0000"
	for _, name := range []string{stale, staleOther} {
		if err := IP("netns", "add", name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { IP("netns", "del", name) })
	}
	live, err := NewNetNS("sweeptest")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	if got := SweepNetNS("sweeptest"); !slices.Equal(got, []string{stale}) {
		t.Errorf("swept %v, want only %s", got, stale)
	}
	for _, name := range []string{live.Name, staleOther} {
		if _, err := os.Stat("/run/netns/" + name); err != nil {
			t.Errorf("%s was deleted: %v", name, err)
		}
	}
}
