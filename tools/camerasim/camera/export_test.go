package camera

import "time"

// SetFrameInterval speeds up (or slows down) the stream's pacing, so that a test can
// watch the clip loop without waiting 10 s. Call it before Initialize.
func (s *Server) SetFrameInterval(d time.Duration) { s.frameInterval = d }

// SetSendBuffer fixes the send buffer of the connections the server accepts, so that a
// frozen client fills it quickly. Call it before Initialize.
func (s *Server) SetSendBuffer(n int) { s.sendBuffer = n }

// ClipPictures returns the number of pictures in the embedded clip.
func ClipPictures() int {
	c, err := parseClip(clipH264)
	if err != nil {
		panic(err)
	}
	return len(c.aus)
}
