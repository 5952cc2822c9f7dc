package suite

import (
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/procstat"
)

// Results is everything one run measured; bench/results.json is its JSON.
// Rates are in MB/s (10^6 bytes) or bit/s as named, latencies in
// milliseconds, memory in bytes.
type Results struct {
	Meta         Meta                `json:"meta"`
	Throughput   []ThroughputResult  `json:"throughput"`
	Ratios       map[string]float64  `json:"ratios"`
	Concurrency  []ConcurrencyResult `json:"concurrency"`
	OpenLatency  *OpenLatencyResult  `json:"openLatency,omitempty"`
	AddedLatency *AddedLatencyResult `json:"addedLatency,omitempty"`
	Memory       *MemoryResult       `json:"memory,omitempty"`
	Fanout       *FanoutResult       `json:"fanout,omitempty"`
	Targets      []Target            `json:"targets"`
}

// Meta describes the run and the machine.
type Meta struct {
	Started    time.Time     `json:"started"`
	Duration   time.Duration `json:"durationNs"`
	Command    string        `json:"command"`
	Quick      bool          `json:"quick"`
	GoVersion  string        `json:"goVersion"`
	CPU        string        `json:"cpu"`
	Cores      int           `json:"cores"`
	Kernel     string        `json:"kernel"`
	Commit     string        `json:"commit"`
	LoadBefore [3]float64    `json:"loadAverageBefore"`
	// ModuleImageEnv is the environment of the module's image, which every
	// step runs the module with (ImageEnv), e.g. GOMAXPROCS=1.
	ModuleImageEnv []string   `json:"moduleImageEnv"`
	LoadAfter      [3]float64 `json:"loadAverageAfter"`
	// BackgroundBefore and BackgroundAfter are the machine's busy CPU (% of
	// one core) over 5 s before the run started anything and after it
	// stopped everything: other users' load.
	BackgroundBefore float64 `json:"backgroundCpuPercentBefore"`
	BackgroundAfter  float64 `json:"backgroundCpuPercentAfter"`
	ChiselVersion    string  `json:"chiselVersion"`
	// Settings are the knobs of the run (durations, counts, pacing).
	Settings map[string]any `json:"settings"`
	Notes    []string       `json:"notes,omitempty"`
}

// ThroughputResult is one path and direction of the single-tunnel test.
type ThroughputResult struct {
	// Path is "raw" (loopback TCP), "tlsfwd" (the reference tunnel), "chisel" or "rtsptunnel".
	Path string `json:"path"`
	// Direction is "down" (camera → player, the video direction) or "up".
	Direction string `json:"direction"`
	// MBps is the median over the rounds; Samples are every round's figure.
	MBps    float64   `json:"mbps"`
	Samples []float64 `json:"samples"`
	// CPU is each process's CPU (% of one core) over the median round:
	// "harness" (player and camera), "module", "relay", "chiselClient", "chiselServer",
	// "tlsfwdIn", "tlsfwdOut".
	CPU map[string]float64 `json:"cpu"`
	// Machine is the whole machine's busy CPU over that round (% of one core).
	Machine float64 `json:"machineCpuPercent"`
}

// ConcurrencyResult is one step of the concurrent-tunnels test.
type ConcurrencyResult struct {
	Tunnels int `json:"tunnels"`
	// Pacing is "frame" (a frame's packets back to back at FPS) or "packet"
	// (every packet paced on its own).
	Pacing string `json:"pacing"`
	FPS    int    `json:"fps"`
	// ModuleEnv is extra environment the module ran with in this step
	// (e.g. GOMAXPROCS=1), empty for the defaults.
	ModuleEnv string `json:"moduleEnv,omitempty"`
	// Writev: the camera wrote each burst with one writev, not one write per packet.
	Writev    bool          `json:"writev"`
	TargetBps float64       `json:"targetBitsPerSecond"`
	Window    time.Duration `json:"windowNs"`
	// OpenTime is how long opening all tunnels took (in flight at most
	// OpenConcurrency); OpensPerSec = Tunnels / OpenTime.
	OpenTime    time.Duration `json:"openTimeNs"`
	OpensPerSec float64       `json:"opensPerSecond"`
	// OpenRetries counts players that had to retry (their open failed and
	// the relay answered 503), as players do.
	OpenRetries int `json:"openRetries"`
	// Delivered rates per tunnel over the window, bit/s.
	MeanBps float64 `json:"meanBitsPerSecond"`
	MinBps  float64 `json:"minBitsPerSecond"`
	P01Bps  float64 `json:"p01BitsPerSecond"`
	// AtFullRate counts tunnels that delivered ≥ 99% of TargetBps.
	AtFullRate int `json:"atFullRate"`
	// Failed counts tunnels that ended during the window.
	Failed  int            `json:"failed"`
	Module  procstat.Usage `json:"module"`
	Relay   procstat.Usage `json:"relay"`
	Harness procstat.Usage `json:"harness"`
	// Emulator is IoT Hub (the opens' method calls, twin updates).
	Emulator procstat.Usage `json:"emulator"`
	// Machine is the whole machine's busy CPU (% of one core, of
	// 100 × cores); Others is what was not ours: other users' load, kernel
	// threads (part of the loopback TCP work), hypervisor steal.
	Machine float64 `json:"machineCpuPercent"`
	Others  float64 `json:"otherCpuPercent"`
	// ModuleRSSBefore and RelayRSSBefore are the RSS before the tunnels
	// were opened.
	ModuleRSSBefore int64 `json:"moduleRssBeforeBytes"`
	RelayRSSBefore  int64 `json:"relayRssBeforeBytes"`
}

// Percentiles summarizes a latency sample, in milliseconds.
type Percentiles struct {
	N    int     `json:"n"`
	Mean float64 `json:"meanMs"`
	P50  float64 `json:"p50Ms"`
	P90  float64 `json:"p90Ms"`
	P99  float64 `json:"p99Ms"`
	Max  float64 `json:"maxMs"`
}

// OpenLatencyResult is the open-latency test.
type OpenLatencyResult struct {
	// FirstByte is player connect (the relay calls tunnelOpen at once) →
	// first byte of the camera's answer to the player's OPTIONS, one open
	// at a time.
	FirstByte Percentiles `json:"firstByte"`
	Failures  int         `json:"failures"`
	// Sustained opens with Concurrency in flight: each opens a tunnel, gets
	// the OPTIONS answer and closes.
	Sustained SustainedOpens `json:"sustained"`
}

// SustainedOpens is a burst of opens with several in flight.
type SustainedOpens struct {
	Opens       int           `json:"opens"`
	Concurrency int           `json:"concurrency"`
	Elapsed     time.Duration `json:"elapsedNs"`
	PerSec      float64       `json:"opensPerSecond"`
	Failures    int           `json:"failures"`
	FirstByte   Percentiles   `json:"firstByte"`
}

// AddedLatencyResult is the OPTIONS round trip to the camera simulator over
// an open tunnel, over chisel and directly, samples interleaved.
type AddedLatencyResult struct {
	Direct    Percentiles `json:"direct"`
	Tunnel    Percentiles `json:"rtsptunnel"`
	Chisel    Percentiles `json:"chisel"`
	AddedP50  float64     `json:"addedP50Ms"`
	AddedP99  float64     `json:"addedP99Ms"`
	ChiselP50 float64     `json:"chiselAddedP50Ms"`
	ChiselP99 float64     `json:"chiselAddedP99Ms"`
	// TLSFwd is the reference tunnel (two TLS forwarders, tests/bench/cmd/tlsfwd).
	TLSFwd    Percentiles `json:"tlsfwd"`
	TLSFwdP50 float64     `json:"tlsfwdAddedP50Ms"`
	TLSFwdP99 float64     `json:"tlsfwdAddedP99Ms"`
	// Rounds are the rounds' own percentiles; the fields above are their
	// medians (medianPercentiles).
	Rounds []AddedLatencyRound `json:"rounds,omitempty"`
}

// AddedLatencyRound is one round of the added-latency test.
type AddedLatencyRound struct {
	Direct Percentiles `json:"direct"`
	Tunnel Percentiles `json:"rtsptunnel"`
	Chisel Percentiles `json:"chisel"`
	TLSFwd Percentiles `json:"tlsfwd"`
}

// MemoryResult is the memory-per-tunnel test.
type MemoryResult struct {
	Tunnels     int `json:"tunnels"`
	OpenRetries int `json:"openRetries"`
	// Baseline is the module's RSS with no tunnel, before any test.
	ModuleBaseline int64 `json:"moduleBaselineBytes"`
	RelayBaseline  int64 `json:"relayBaselineBytes"`
	// Idle: Tunnels open, no bytes flowing.
	ModuleIdle       int64   `json:"moduleIdleBytes"`
	ModuleIdlePerTun float64 `json:"moduleIdlePerTunnelBytes"`
	RelayIdle        int64   `json:"relayIdleBytes"`
	RelayIdlePerTun  float64 `json:"relayIdlePerTunnelBytes"`
	// Runtime is what the Go runtimes reported with the idle tunnels open
	// (go_memstats_heap_inuse_bytes, go_memstats_stack_inuse_bytes,
	// go_goroutines), keyed "module.heap", "relay.stack" ...
	Runtime map[string]float64 `json:"runtime"`
	// Active: from the concurrency step with the most tunnels (max RSS in
	// its window, against the RSS just before that step's series started
	// with a fresh relay and module).
	ActiveTunnels      int     `json:"activeTunnels"`
	ModuleActiveBase   int64   `json:"moduleActiveBaselineBytes"`
	RelayActiveBase    int64   `json:"relayActiveBaselineBytes"`
	ModuleActive       int64   `json:"moduleActiveBytes"`
	ModuleActivePerTun float64 `json:"moduleActivePerTunnelBytes"`
	RelayActive        int64   `json:"relayActiveBytes"`
	RelayActivePerTun  float64 `json:"relayActivePerTunnelBytes"`
}

// FanoutResult is the fan-out test: players on one shared camera, all
// served through one tunnel.
type FanoutResult struct {
	// Camera describes the stream the camera sends; StreamBps is its RTP
	// payload rate (bit/s) at FPS pictures per second.
	Camera    string  `json:"camera"`
	StreamBps float64 `json:"streamBitsPerSecond"`
	FPS       int     `json:"fps"`
	// Window is each step's measurement window, after Warmup.
	Window time.Duration `json:"windowNs"`
	Warmup time.Duration `json:"warmupNs"`
	// ColdJoin is the first viewer's join: it made the relay open the
	// tunnel (tunnelOpen through IoT Hub) and the camera's RTSP session.
	ColdJoin JoinMarks `json:"coldJoin"`
	// Steps are the player counts, in the order measured (ascending, each
	// adding players to the previous step's).
	Steps []FanoutStep `json:"steps"`
	// Join is JoinCount sequential joins with one viewer already watching;
	// JoinLoaded the same with the last step's players watching.
	Join       *JoinResult `json:"join,omitempty"`
	JoinLoaded *JoinResult `json:"joinLoaded,omitempty"`
	// What must not change after the first viewer's open, over the whole
	// series (every step and every join): MethodCalls is the increase of
	// relay_method_calls_total (every status; want 0); RelayTunnelsMax and
	// ModuleTunnelsMax are the largest relay_sessions_active and
	// rtsptunnel_sessions_active polled at every step and after every join
	// (want 1); CameraSessions counts the RTSP sessions the camera served
	// in the series (want 1).
	MethodCallsAtOpen float64 `json:"methodCallsAtOpen"`
	MethodCalls       float64 `json:"methodCallsAfterOpen"`
	RelayTunnelsMax   float64 `json:"relayTunnelsMax"`
	ModuleTunnelsMax  float64 `json:"moduleTunnelsMax"`
	CameraSessions    int64   `json:"cameraSessions"`
}

// OneTunnel reports whether the series ran as a shared camera should: one
// tunnelOpen call at the first viewer's open, none after it, one tunnel in
// the relay and the module, one RTSP session at the camera.
func (f *FanoutResult) OneTunnel() bool {
	return f.MethodCallsAtOpen == 1 && f.MethodCalls == 0 && f.RelayTunnelsMax == 1 && f.ModuleTunnelsMax == 1 && f.CameraSessions == 1
}

// FanoutStep is one player count of the fan-out test. Rates are bytes per
// second over the window.
type FanoutStep struct {
	Players int `json:"players"`
	// EdgeBps is the rate of relay_edge_bytes_total{direction="from_camera"}:
	// what the tunnel carried from the camera (RTSP interleaved, as sent).
	EdgeBps float64 `json:"edgeBytesPerSecond"`
	// ToPlayersBps is the rate of relay_player_bytes_total (RTP bytes the
	// relay queued for its players); ReceivedBps what the players counted
	// (RTP header and payload), all together; MinPlayerBps the slowest
	// player's. Fanout = ToPlayersBps / EdgeBps.
	ToPlayersBps float64 `json:"toPlayersBytesPerSecond"`
	ReceivedBps  float64 `json:"receivedBytesPerSecond"`
	MinPlayerBps float64 `json:"minPlayerBytesPerSecond"`
	Fanout       float64 `json:"fanout"`
	// Dropped is the increase of relay_player_packets_dropped_total (slow
	// players), Lost the packets the players found missing, Ended the
	// players whose session ended during the window.
	Dropped float64 `json:"droppedPackets"`
	Lost    int64   `json:"lostPackets"`
	Ended   int     `json:"ended"`
	// OpenTime is how long the players added in this step took to join.
	OpenTime time.Duration  `json:"openTimeNs"`
	Relay    procstat.Usage `json:"relay"`
	Module   procstat.Usage `json:"module"`
	Harness  procstat.Usage `json:"harness"`
	Machine  float64        `json:"machineCpuPercent"`
	// RelayWritesPerSec and RelayReadsPerSec are the relay's write and read
	// system calls per second (/proc/<pid>/io).
	RelayWritesPerSec float64 `json:"relayWritesPerSecond"`
	RelayReadsPerSec  float64 `json:"relayReadsPerSecond"`
	// RelayCPUPerPlayer (% of one core) and RelayRSSPerPlayer (bytes, from
	// RSSMax) are this step's relay figures minus the first step's (one
	// viewer: the tunnel, the camera's RTSP session and one reader), per
	// player added since; 0 for the first step.
	RelayCPUPerPlayer float64 `json:"relayCpuPercentPerPlayer"`
	RelayRSSPerPlayer float64 `json:"relayRssPerPlayerBytes"`
}

// JoinMarks is one join's way to its first RTP packet, from the start of
// its connection, in milliseconds.
type JoinMarks struct {
	Described   float64 `json:"describedMs"`
	Playing     float64 `json:"playingMs"`
	FirstPacket float64 `json:"firstPacketMs"`
}

// JoinResult is a series of sequential joins to a live shared camera: each
// player connects, authenticates (Digest), plays over TCP and closes at its
// first RTP packet.
type JoinResult struct {
	// Viewers were watching during the joins.
	Viewers int `json:"viewers"`
	// FirstPacket is connection start → first RTP packet; Described and
	// Playing are the marks on the way (DESCRIBE answered, PLAY answered).
	FirstPacket Percentiles `json:"firstPacket"`
	Described   Percentiles `json:"described"`
	Playing     Percentiles `json:"playing"`
	// RelayDescribeMean is the mean of the relay's own
	// relay_player_join_duration_seconds over the joins (its DESCRIBE
	// handling, ms).
	RelayDescribeMean float64 `json:"relayDescribeMeanMs"`
	// MethodCalls is the increase of relay_method_calls_total over the
	// joins (want 0: joining a live camera calls nothing).
	MethodCalls float64 `json:"methodCalls"`
	Failures    int     `json:"failures"`
}

// Target is one of the goals and where this run stands.
type Target struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}
