package whep

import (
	"testing"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
)

// TestFrozenViewer: a viewer that stops reading loses frames from its own
// queue; the camera's goroutine never waits for it, and a viewer that
// reads gets every frame in order.
func TestFrozenViewer(t *testing.T) {
	forma := &format.H264{PayloadTyp: 96, PacketizationMode: 1,
		SPS: []byte{0x67, 0x42, 0xc0, 0x28, 0xd9}, PPS: []byte{0x68, 0xcb, 0x8c, 0xb2}}
	media := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{forma}}
	stream := &gortsplib.ServerStream{Desc: &description.Session{Medias: []*description.Media{media}}}
	enc, err := forma.CreateEncoder()
	if err != nil {
		t.Fatal(err)
	}
	f := newFeed()
	frozen := &viewer{ch: make(chan *accessUnit, 4)}
	reader := &viewer{ch: make(chan *accessUnit, 1000)}
	f.add(frozen, stream)
	f.add(reader, stream)

	const frames = 500
	for i := range frames {
		nalu := []byte{0x41, byte(i), byte(i >> 8)}
		if i%25 == 0 {
			nalu = []byte{0x65, byte(i), byte(i >> 8)}
		}
		pkts, err := enc.Encode([][]byte{nalu})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts {
			p.Timestamp = uint32(i * 3600)
			f.onPacket(stream, media, forma, p) // must not block on the frozen viewer
		}
	}
	if got := frozen.dropped.Load(); got != frames-4 {
		t.Errorf("the frozen viewer dropped %d frames, want %d", got, frames-4)
	}
	if got := reader.dropped.Load(); got != 0 {
		t.Errorf("the reading viewer dropped %d frames", got)
	}
	if len(reader.ch) != frames {
		t.Fatalf("the reading viewer got %d frames, want %d", len(reader.ch), frames)
	}
	for i := range frames {
		a := <-reader.ch
		if want := uint32(i * 3600); a.pkts[0].Timestamp != want || a.key != (i%25 == 0) {
			t.Fatalf("frame %d: timestamp %d key %v, want %d key %v", i, a.pkts[0].Timestamp, a.key, want, i%25 == 0)
		}
	}
}
