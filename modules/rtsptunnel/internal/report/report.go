package report

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/session"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
)

// Publisher sends a reported-properties patch to the module twin. The hub
// client implements it; UpdateReported must honour ctx.
type Publisher interface {
	UpdateReported(ctx context.Context, patch json.RawMessage) error
}

// PublisherFunc adapts a function to Publisher, e.g. a hub client whose
// UpdateReported also returns the new reported version:
//
//	report.PublisherFunc(func(ctx context.Context, p json.RawMessage) error {
//		_, err := client.UpdateReported(ctx, p)
//		return err
//	})
type PublisherFunc func(ctx context.Context, patch json.RawMessage) error

// UpdateReported calls f.
func (f PublisherFunc) UpdateReported(ctx context.Context, patch json.RawMessage) error {
	return f(ctx, patch)
}

// Source provides the state to report; *session.Manager implements it.
type Source interface {
	Snapshot() session.Snapshot
	// Changed receives a value whenever the snapshot may have changed.
	Changed() <-chan struct{}
}

// Defaults of the Reporter's optional fields.
const (
	DefaultInterval       = time.Second
	DefaultStatsInterval  = 30 * time.Second
	DefaultMaxBytes       = 24 << 10
	DefaultPublishTimeout = 10 * time.Second
	// DefaultOrphanRetention matches the sessionRetention setting's default.
	DefaultOrphanRetention = 60 * time.Second
	maxBackoff             = 30 * time.Second
)

// Reporter publishes the Source's state to the Publisher. Set the fields, then
// call Run in a goroutine; Ack, Republish and Flush are safe to call from
// any goroutine at any time.
type Reporter struct {
	Publisher Publisher
	Source    Source
	// Logger receives publish failures; nil discards them.
	Logger *slog.Logger
	// Interval is the minimum time between patches. Zero means DefaultInterval.
	Interval time.Duration
	// StatsInterval is how often byte counts of open sessions are refreshed.
	// Zero means DefaultStatsInterval.
	StatsInterval time.Duration
	// MaxBytes bounds the JSON size of the sessions and summary properties.
	// Zero means DefaultMaxBytes.
	MaxBytes int
	// PublishTimeout bounds each Publisher call made by Run. Zero means
	// DefaultPublishTimeout.
	PublishTimeout time.Duration
	// Ready, when not nil, holds Run back until it is closed: the app closes
	// it on the hub's first connection, so that a start does not begin with
	// a failed patch (and its warning) made before there was a connection.
	Ready <-chan struct{}
	// Previous, when set, reads the reported properties that an earlier run
	// of the module left in the twin. Run calls it once, after Ready and
	// before its first patch: the sessions listed there as open, which no
	// process carries any more, are reported closed with closeReason
	// module_restarted for OrphanRetention, instead of vanishing with the
	// start's reset. When it fails, they vanish (and a warning says so).
	Previous func(ctx context.Context) (json.RawMessage, error)
	// OrphanRetention is how long reconciled sessions stay reported. Zero
	// means DefaultOrphanRetention.
	OrphanRetention time.Duration

	initOnce sync.Once
	wake     chan struct{} // capacity 1: Ack or Republish has work

	mu          sync.Mutex // guards the inputs below
	pendingAcks map[string]settings.Ack
	needReset   bool

	pubMu            sync.Mutex        // serialises publishing; guards the published state below
	published        map[string]object // per session: the fields the twin holds
	publishedSummary object
	started          bool              // the first reset has been sent
	orphans          map[string]object // sessions an earlier run left open, reported closed
	orphansUntil     time.Time         // when orphans stop being reported
}

// object is a reported JSON object by field, each value marshalled.
type object map[string]json.RawMessage

var null = json.RawMessage("null")

func (r *Reporter) init() {
	r.initOnce.Do(func() {
		r.wake = make(chan struct{}, 1)
		if r.Logger == nil {
			r.Logger = slog.New(slog.DiscardHandler)
		}
		if r.Interval <= 0 {
			r.Interval = DefaultInterval
		}
		if r.StatsInterval <= 0 {
			r.StatsInterval = DefaultStatsInterval
		}
		if r.MaxBytes <= 0 {
			r.MaxBytes = DefaultMaxBytes
		}
		if r.OrphanRetention <= 0 {
			r.OrphanRetention = DefaultOrphanRetention
		}
		if r.PublishTimeout <= 0 {
			r.PublishTimeout = DefaultPublishTimeout
		}
	})
}

func (r *Reporter) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Ack queues writable-property acknowledgements (settings.Settings.Apply's
// result); they go out with the next patch, after every patch sent before. A
// later ack for the same property replaces an unsent one. It does not block.
func (r *Reporter) Ack(acks map[string]settings.Ack) {
	r.init()
	if len(acks) == 0 {
		return
	}
	r.mu.Lock()
	if r.pendingAcks == nil {
		r.pendingAcks = make(map[string]settings.Ack, len(acks))
	}
	maps.Copy(r.pendingAcks, acks)
	r.mu.Unlock()
	r.poke()
}

// Republish makes the next patch rewrite the whole state (call it after every
// hub reconnect: patches may have been lost). It does not block.
func (r *Reporter) Republish() {
	r.init()
	r.mu.Lock()
	r.needReset = true
	r.mu.Unlock()
	r.poke()
}

// Flush publishes whatever is pending now, ignoring Interval, and returns the
// Publisher's error. For shutdown: call it after session.Manager.Shutdown,
// whether or not Run is still running.
func (r *Reporter) Flush(ctx context.Context) error {
	r.init()
	return r.publish(ctx)
}

// Run publishes the initial state, then every change, at most once per
// Interval, retrying failed patches with backoff (1s doubling to 30s). It
// returns ctx's error when ctx ends.
func (r *Reporter) Run(ctx context.Context) error {
	r.init()
	if r.Ready != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.Ready:
		}
	}
	expired := r.reconcile(ctx)
	timer := time.NewTimer(0) // the initial publish
	defer timer.Stop()
	stats := time.NewTicker(r.StatsInterval)
	defer stats.Stop()
	armed, pending := true, true
	var last time.Time
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.Source.Changed():
			pending = true
		case <-r.wake:
			pending = true
		case <-stats.C:
			pending = true // unchanged counts make no patch
		case <-expired:
			expired = nil
			pending = true // the reconciled sessions leave the twin
		case <-timer.C:
			armed = false
			if !pending {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, r.PublishTimeout)
			err := r.publish(pctx)
			cancel()
			last = time.Now()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				backoff = min(max(2*backoff, time.Second), maxBackoff)
				r.Logger.Warn("failed to update reported properties", "error", err, "retry_in", backoff)
			} else {
				backoff = 0
				pending = false
			}
		}
		if pending && !armed {
			wait := max(r.Interval, backoff) - time.Since(last)
			timer.Reset(max(wait, 0))
			armed = true
		}
	}
}

// publish sends the difference between the Source's state (plus pending acks)
// and what the twin holds. On failure the twin's state is unknown: the next
// publish resets it, and unsent acks stay queued.
func (r *Reporter) publish(ctx context.Context) error {
	r.pubMu.Lock()
	defer r.pubMu.Unlock()

	r.mu.Lock()
	acks := r.pendingAcks
	r.pendingAcks = nil
	reset := r.needReset || !r.started
	r.needReset = false
	r.mu.Unlock()

	err := r.send(ctx, acks, reset)
	if err != nil {
		r.mu.Lock()
		r.needReset = true
		for name, ack := range acks {
			if _, newer := r.pendingAcks[name]; !newer {
				if r.pendingAcks == nil {
					r.pendingAcks = make(map[string]settings.Ack)
				}
				r.pendingAcks[name] = ack
			}
		}
		r.mu.Unlock()
	}
	return err
}

// send builds and sends the patch(es); caller holds pubMu.
func (r *Reporter) send(ctx context.Context, acks map[string]settings.Ack, reset bool) error {
	if reset {
		if err := r.Publisher.UpdateReported(ctx, json.RawMessage(`{"sessions":null}`)); err != nil {
			return fmt.Errorf("failed to reset reported sessions: %w", err)
		}
		r.started = true
		r.published = map[string]object{}
		r.publishedSummary = nil
	}
	sessions, summary := render(r.Source.Snapshot(), r.MaxBytes)
	if r.orphans != nil && !time.Now().Before(r.orphansUntil) {
		r.orphans = nil
	}
	sessions = withOrphans(sessions, summary, r.orphans, r.MaxBytes)

	patch := map[string]any{}
	sessionsPatch := map[string]any{}
	for id, obj := range sessions {
		if d := diff(r.published[id], obj); len(d) > 0 {
			sessionsPatch[id] = d
		}
	}
	for id := range r.published {
		if _, ok := sessions[id]; !ok {
			sessionsPatch[id] = null
		}
	}
	if len(sessionsPatch) > 0 {
		patch["sessions"] = sessionsPatch
	}
	if d := diff(r.publishedSummary, summary); len(d) > 0 {
		patch["summary"] = d
	}
	for name, ack := range acks {
		patch[name] = ack
	}
	if len(patch) == 0 {
		return nil
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("failed to encode reported properties: %w", err)
	}
	if err := r.Publisher.UpdateReported(ctx, b); err != nil {
		return fmt.Errorf("failed to update reported properties: %w", err)
	}
	r.published = sessions
	r.publishedSummary = summary
	return nil
}

// diff returns the fields of next that differ from prev, and null for fields
// that next no longer has (merge-patch semantics).
func diff(prev, next object) object {
	d := object{}
	for k, v := range next {
		if string(prev[k]) != string(v) {
			d[k] = v
		}
	}
	for k := range prev {
		if _, ok := next[k]; !ok {
			d[k] = null
		}
	}
	return d
}
