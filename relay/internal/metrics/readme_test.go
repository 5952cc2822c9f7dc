package metrics

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeDocumentsEveryMetric keeps the metrics table of relay/README.md
// and the collectors in step, in both directions.
func TestReadmeDocumentsEveryMetric(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	have := map[string]bool{}
	for _, f := range gatherAll(t) {
		have[f.GetName()] = true
		if !strings.Contains(readme, "| `"+f.GetName()+"`") {
			t.Errorf("README's metrics table lacks %s", f.GetName())
		}
	}
	for _, r := range regexp.MustCompile("(?m)^\\| `(relay_[a-z_]+)`").FindAllStringSubmatch(readme, -1) {
		if !have[r[1]] {
			t.Errorf("README documents %s, which the relay does not export", r[1])
		}
	}
	for _, o := range append(append(append(append([]string{}, Outcomes...), States...), Refusals...), WebRTCRefusals...) {
		if !strings.Contains(readme, o) {
			t.Errorf("README does not name the label value %s", o)
		}
	}
}
