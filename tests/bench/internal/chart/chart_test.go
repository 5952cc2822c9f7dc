package chart

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestRender(t *testing.T) {
	var buf bytes.Buffer
	err := Render(&buf, "test chart", 2, 400, 300,
		Panel{Title: "bars", YLabel: "MB/s", Categories: []string{"down", "up"}, Kind: Bars,
			Series: []Series{{"raw", []float64{2000, 1800}}, {"chisel", []float64{120, 80}}, {"rtsptunnel", []float64{600, math.NaN()}}}},
		Panel{Title: "lines, log", YLabel: "Mbit/s", Categories: []string{"1", "10", "100", "1000"}, Kind: Lines, LogY: true,
			Series: []Series{{"total", []float64{1.5, 15, 150, 1500}}}, Goals: []Goal{{150, "goal"}}},
		Panel{Title: "empty", Categories: []string{"a"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 800 || b.Dy() != 28+600 {
		t.Errorf("size %v", b)
	}
	if dir := os.Getenv("CHART_OUT"); dir != "" { // look at it: CHART_OUT=/tmp go test
		png.Encode(mustCreate(t, filepath.Join(dir, "chart_test.png")), img)
	}
	if err := Render(&buf, "", 1, 100, 100, Panel{Kind: Lines, LogY: true, Categories: []string{"a"}, Series: []Series{{"x", []float64{0}}}}); err == nil {
		t.Error("log axis with 0 accepted")
	}
}

func TestNiceStepAndFormat(t *testing.T) {
	for in, want := range map[float64]float64{0.3: 0.5, 1: 1, 1.2: 2, 3: 5, 7: 10, 240: 500} {
		if got := niceStep(in); math.Abs(got-want) > 1e-9 {
			t.Errorf("niceStep(%v) = %v, want %v", in, got, want)
		}
	}
	for in, want := range map[float64]string{1500: "1500", 12.34: "12.3", 0.256: "0.26", 20000: "20k"} {
		if got := format(in); got != want {
			t.Errorf("format(%v) = %q, want %q", in, got, want)
		}
	}
}

func mustCreate(t *testing.T, path string) *os.File {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
