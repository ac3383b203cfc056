package reputation

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// EvidenceSource gathers one kind of evidence about an image. Sources may do I/O (registries,
// report stores); they run only on engine workers, never on the scheduling cycle.
type EvidenceSource interface {
	Name() string
	Collect(ctx context.Context, ev *Evidence) error
}

// EngineOptions configure an Engine.
type EngineOptions struct {
	Policy *Policy
	Cache  *Cache
	// Sources add evidence beyond what the reference itself says (origin needs none).
	Sources []EvidenceSource
	// LocalSources read evidence kept in memory (runtime behavior). They run after Sources at
	// every evaluation, and alone when Rescore re-weighs an image without I/O.
	LocalSources []EvidenceSource
	// RescoreEvery is how often images with runtime behavior are rescored from memory, so that
	// decaying penalties lift on time. Zero means the default; negative never.
	RescoreEvery time.Duration
	// Workers bounds how many images are evaluated at once.
	Workers int
	// Wait bounds how long a pod waits for its images' first verdicts. Past it a provisional
	// unknown verdict is published, so pods are placed (never as trusted) while evaluation goes on.
	Wait time.Duration
	// RetryAfter is the first delay before an image whose evidence could not all be gathered
	// (a registry down, say) is evaluated again; it doubles up to MaxRetryAfter.
	RetryAfter, MaxRetryAfter time.Duration
	// ReverifyAfter is how long a complete verdict stands before its evidence is gathered
	// again: signatures and keys change. Zero means the default; negative never.
	ReverifyAfter time.Duration
	// Now is the clock; tests replace it.
	Now func() time.Time
	// OnEvaluated is told of every evaluation a worker completes, for metrics: the evidence
	// (nil for a reference that does not parse), the verdict, the time it took, and whether
	// some evidence could not be gathered.
	OnEvaluated func(ev *Evidence, v *Verdict, elapsed time.Duration, incomplete bool)
}

// Defaults for re-evaluation.
const (
	DefaultRetryAfter    = 30 * time.Second
	DefaultMaxRetryAfter = 10 * time.Minute
	DefaultReverifyAfter = time.Hour
	DefaultRescoreEvery  = time.Minute
)

// Engine evaluates each image once, in the background, and publishes verdicts into the cache.
type Engine struct {
	opts   EngineOptions
	policy atomic.Pointer[Policy] // swapped whole by SetPolicy; opts.Policy is the first one

	mu       sync.Mutex
	queued   map[string]bool // requested and not yet evaluated, so each image is evaluated once
	queue    []string
	failures map[string]int // consecutive incomplete evaluations, for backoff
	notEmpty chan struct{}

	// publishMu orders publications of verdicts, so that a rescore from memory never replaces a
	// verdict built from newer evidence; evidence holds what each published verdict was built on.
	publishMu sync.Mutex
	evidence  map[string]*Evidence
}

// NewEngine builds an engine; Run starts its workers.
func NewEngine(opts EngineOptions) *Engine {
	if opts.Policy == nil {
		opts.Policy = DefaultPolicy()
	}
	if opts.Cache == nil {
		opts.Cache = NewCache()
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = DefaultRetryAfter
	}
	if opts.MaxRetryAfter < opts.RetryAfter {
		opts.MaxRetryAfter = max(DefaultMaxRetryAfter, opts.RetryAfter)
	}
	if opts.ReverifyAfter == 0 {
		opts.ReverifyAfter = DefaultReverifyAfter
	}
	if opts.RescoreEvery == 0 {
		opts.RescoreEvery = DefaultRescoreEvery
	}
	e := &Engine{opts: opts, queued: map[string]bool{}, failures: map[string]int{}, notEmpty: make(chan struct{}, 1), evidence: map[string]*Evidence{}}
	e.policy.Store(opts.Policy)
	return e
}

// Cache is the cache the engine publishes into.
func (e *Engine) Cache() *Cache { return e.opts.Cache }

// Policy is the policy in force.
func (e *Engine) Policy() *Policy { return e.policy.Load() }

// SetPolicy puts a policy in force for every evaluation from now on. Verdicts already published
// stand until Reweigh or a re-evaluation replaces them.
func (e *Engine) SetPolicy(p *Policy) { e.policy.Store(p) }

// Request asks for a verdict on an image as spelled in a pod spec. It never blocks and does no
// I/O, so it is safe to call from the scheduler's queue. Repeated requests are coalesced.
func (e *Engine) Request(image string) {
	if e.opts.Cache.Get(image) != nil {
		return
	}
	e.mu.Lock()
	// Re-check under the lock: a worker publishes before it forgets the image, so an image
	// that is neither queued nor cached here has truly not been evaluated.
	if e.queued[image] || e.opts.Cache.Get(image) != nil {
		e.mu.Unlock()
		return
	}
	e.enqueueLocked(image)
	e.mu.Unlock()
	if e.opts.Wait > 0 {
		time.AfterFunc(e.opts.Wait, func() {
			e.opts.Cache.PublishIfAbsent(image, Pending(image, e.opts.Wait, e.Policy(), e.opts.Now()))
		})
	}
}

// enqueueLocked queues an image for evaluation; e.mu is held.
func (e *Engine) enqueueLocked(image string) {
	if e.queued[image] {
		return
	}
	e.queued[image] = true
	e.queue = append(e.queue, image)
	select {
	case e.notEmpty <- struct{}{}:
	default:
	}
}

// Reevaluate queues every image whose current verdict matches, e.g. when a vulnerability report
// about its digest arrives. The current verdicts stand until the new ones are published.
func (e *Engine) Reevaluate(match func(image string, v *Verdict) bool) int {
	n := 0
	for image, v := range e.opts.Cache.Snapshot() {
		if match(image, v) {
			e.mu.Lock()
			e.enqueueLocked(image)
			e.mu.Unlock()
			n++
		}
	}
	return n
}

// reevaluateLater queues the image again after a delay: soon, with backoff, when its evidence
// was incomplete; after ReverifyAfter when it was complete. The verdict in the cache stands
// until then, so pods keep being placed from memory.
func (e *Engine) reevaluateLater(ctx context.Context, image string, incomplete bool) {
	e.mu.Lock()
	delay := e.opts.ReverifyAfter
	if incomplete {
		e.failures[image]++
		delay = e.opts.RetryAfter << min(e.failures[image]-1, 16)
		delay = min(delay, e.opts.MaxRetryAfter)
	} else {
		delete(e.failures, image)
	}
	e.mu.Unlock()
	if delay < 0 {
		return
	}
	time.AfterFunc(delay, func() {
		if ctx.Err() != nil {
			return
		}
		e.mu.Lock()
		e.enqueueLocked(image)
		e.mu.Unlock()
	})
}

// Run evaluates requested images until ctx is done.
func (e *Engine) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if e.opts.RescoreEvery > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(e.opts.RescoreEvery)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					e.Rescore(func(_ string, ev *Evidence) bool { return len(ev.Behavior) > 0 })
				}
			}
		}()
	}
	for range e.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				image, ok := e.next(ctx)
				if !ok {
					return
				}
				start := time.Now()
				ev, v, incomplete := e.evaluate(ctx, image)
				if e.opts.OnEvaluated != nil {
					e.opts.OnEvaluated(ev, v, time.Since(start), incomplete)
				}
				e.publish(image, ev, v)
				e.mu.Lock()
				delete(e.queued, image)
				e.mu.Unlock()
				if ctx.Err() == nil {
					e.reevaluateLater(ctx, image, incomplete)
				}
			}
		}()
	}
	wg.Wait()
}

func (e *Engine) next(ctx context.Context) (string, bool) {
	for {
		e.mu.Lock()
		if len(e.queue) > 0 {
			image := e.queue[0]
			e.queue = e.queue[1:]
			more := len(e.queue) > 0
			e.mu.Unlock()
			if more { // wake another worker for the rest
				select {
				case e.notEmpty <- struct{}{}:
				default:
				}
			}
			return image, true
		}
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", false
		case <-e.notEmpty:
		}
	}
}

// publish records the evidence a verdict was built on and publishes the verdict.
func (e *Engine) publish(image string, ev *Evidence, v *Verdict) {
	e.publishMu.Lock()
	defer e.publishMu.Unlock()
	if ev != nil {
		e.evidence[image] = ev
	}
	e.opts.Cache.Publish(image, v)
}

// Rescore re-weighs, from memory, every image whose last gathered evidence matches: the local
// sources are read again and the verdict republished if its outcome changed. No registry or
// report is consulted, so a Falco alert re-tiers an image in microseconds whatever the state of
// the registry. Images not yet evaluated are left to their evaluation, which reads the local
// sources too. It returns how many verdicts changed.
func (e *Engine) Rescore(match func(image string, ev *Evidence) bool) int {
	return e.reweigh(match, nil)
}

// Reweigh re-weighs every image from the evidence already gathered, under the policy in force
// (after SetPolicy), and republishes the verdicts whose outcome changed; no I/O. adjust, when
// set, may first withdraw evidence the new policy no longer accepts (a signature by a key that
// is no longer trusted) from a copy. It returns how many verdicts changed.
func (e *Engine) Reweigh(adjust func(ev *Evidence)) int {
	return e.reweigh(func(string, *Evidence) bool { return true }, adjust)
}

func (e *Engine) reweigh(match func(image string, ev *Evidence) bool, adjust func(ev *Evidence)) int {
	changed := 0
	for image, old := range e.opts.Cache.Snapshot() {
		e.publishMu.Lock()
		last := e.evidence[image]
		if last == nil || !match(image, last) {
			e.publishMu.Unlock()
			continue
		}
		ev := e.reread(last, adjust)
		v := Evaluate(e.Policy(), ev, e.opts.Now())
		e.evidence[image] = ev
		if !SameOutcome(old, v) {
			e.opts.Cache.Publish(image, v)
			changed++
		}
		e.publishMu.Unlock()
	}
	return changed
}

// reread copies gathered evidence, applies adjust, and reads the local sources again.
func (e *Engine) reread(last *Evidence, adjust func(ev *Evidence)) *Evidence {
	ev := *last
	if adjust != nil {
		adjust(&ev)
	}
	ctx := context.Background() // local sources do no I/O
	for _, src := range e.opts.LocalSources {
		_ = src.Collect(ctx, &ev) // in-memory reads do not fail
	}
	return &ev
}

// Simulation is one image's verdict now and under a proposed policy.
type Simulation struct {
	Image         string
	Before, After *Verdict
}

// Simulate weighs every image's gathered evidence under a proposed policy and returns each
// image's current and proposed verdicts, changing nothing. Images whose evidence has not been
// gathered since the scheduler started (verdicts warmed from the store) cannot be weighed and
// are returned in notGathered. adjust is as for Reweigh.
func (e *Engine) Simulate(proposed *Policy, adjust func(ev *Evidence)) (out []Simulation, notGathered []string) {
	for image, before := range e.opts.Cache.Snapshot() {
		e.publishMu.Lock()
		last := e.evidence[image]
		var ev *Evidence
		if last != nil {
			ev = e.reread(last, adjust)
		}
		e.publishMu.Unlock()
		if ev == nil {
			notGathered = append(notGathered, image)
			continue
		}
		out = append(out, Simulation{Image: image, Before: before, After: Evaluate(proposed, ev, e.opts.Now())})
	}
	return out, notGathered
}

// SameOutcome reports whether two verdicts place and explain an image alike: same score, tier,
// deciding rule and contributions, however their observation texts differ (ages move on).
func SameOutcome(a, b *Verdict) bool {
	if a == nil || b == nil || a.Score != b.Score || a.Tier != b.Tier || a.DecidedBy != b.DecidedBy || a.Decision != b.Decision ||
		a.PolicyVersion != b.PolicyVersion || len(a.Contributions) != len(b.Contributions) {
		return false
	}
	for i, c := range a.Contributions {
		d := b.Contributions[i]
		if c.Signal != d.Signal || c.Rule != d.Rule || c.Points != d.Points || c.Tier != d.Tier || c.Finding != d.Finding {
			return false
		}
	}
	return true
}

// Evaluate gathers evidence for one image and weighs it under the current policy.
func (e *Engine) Evaluate(ctx context.Context, image string) *Verdict {
	_, v, _ := e.evaluate(ctx, image)
	return v
}

// evaluate also returns the evidence (nil when the reference does not parse) and reports
// whether some of it could not be gathered.
func (e *Engine) evaluate(ctx context.Context, image string) (_ *Evidence, _ *Verdict, incomplete bool) {
	ref, err := ParseImageRef(image)
	if err != nil {
		// Re-reading the same string cannot make it parse: no retry.
		return nil, Unassessable(image, err, e.Policy(), e.opts.Now()), false
	}
	ev := &Evidence{Image: ref}
	for _, src := range e.opts.Sources {
		// A source that fails leaves its evidence missing (missing evidence never raises trust)
		// and the image is evaluated again later.
		if err := src.Collect(ctx, ev); err != nil {
			incomplete = true
		}
	}
	for _, src := range e.opts.LocalSources {
		_ = src.Collect(ctx, ev)
	}
	return ev, Evaluate(e.Policy(), ev, e.opts.Now()), incomplete
}
