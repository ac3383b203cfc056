// Package engine evaluates images in the background and publishes their verdicts into the
// verdict cache the scheduling cycle reads. Its queue (evalQueue) queues each image once however
// many pods ask, retries an image whose evidence could not all be gathered with exponential
// backoff, and gathers a complete verdict's evidence again after ReverifyAfter. Its clock is
// k8s.io/utils/clock, so tests drive time. It lives in pkg/ because the domain package, reputation, imports no client-go; what it
// weighs (policy, evidence, verdicts) stays there.
package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"

	configv1 "github.com/repute-dev/repute/pkg/apis/config/v1"
	"github.com/repute-dev/repute/pkg/shrink"
	"github.com/repute-dev/repute/reputation"
)

// Options configure an Engine. A zero duration turns its mechanism off, as a zero duration in
// the args does; zero Workers or RetryAfter, which would stop evaluation, take the args'
// defaults.
type Options struct {
	Policy *reputation.Policy
	Cache  *reputation.Cache
	// Sources add evidence beyond what the reference itself says (origin needs none).
	Sources []reputation.EvidenceSource
	// LocalSources read evidence kept in memory (runtime behavior). They run after Sources at
	// every evaluation, and alone when Rescore re-weighs an image without I/O.
	LocalSources []reputation.EvidenceSource
	// RescoreEvery is how often images with runtime behavior are rescored from memory, so that
	// decaying penalties lift on time (DefaultRescoreEvery in the scheduler). Zero: never.
	RescoreEvery time.Duration
	// Workers bounds how many images are evaluated at once.
	Workers int
	// Wait bounds how long a pod waits for its images' first verdicts. Past it a provisional
	// unknown verdict is published, so pods are placed (never as trusted) while evaluation goes
	// on. Zero: no provisional verdict.
	Wait time.Duration
	// InUse reports whether any pod still uses an image (as pods spell it). An image that no pod
	// has used for ForgetUnusedAfter is forgotten when it next comes up for evaluation, instead
	// of being verified again: otherwise every tag anyone ever created a pod with would be
	// re-resolved every TagTTL, and its state kept, for good. Nil keeps every image.
	InUse func(image string) bool
	// ForgetUnusedAfter is how long an image stays unused before it is forgotten: long enough
	// that a warm start's verdicts wait for the pods a rollout creates. Zero: DefaultForgetUnusedAfter.
	ForgetUnusedAfter time.Duration
	// RetryAfter is the first delay before an image whose evidence could not all be gathered
	// (a registry down, say) is evaluated again; it doubles up to MaxRetryAfter.
	RetryAfter, MaxRetryAfter time.Duration
	// ReverifyAfter is how long a complete verdict stands before its evidence is gathered
	// again: signatures and keys change. Zero: never.
	ReverifyAfter time.Duration
	// MaxStaleness is how long an image's last verified signature evidence stands while its
	// registry cannot be reached (stale-while-error). Zero: not at all. Never for a tag: what a
	// tag points at cannot be known while the registry is down.
	MaxStaleness time.Duration
	// TagTTL is how long a verdict on an image named by a tag stands before the tag is
	// resolved again: tags move. Zero: as long as ReverifyAfter.
	TagTTL time.Duration
	// Clock is the engine's time; tests pass a fake one.
	Clock clock.WithTickerAndDelayedExecution
	// OnQueueDepth is told how many images wait for a worker whenever that changes, and
	// OnQueueWait how long each image waited, for metrics. Either may be nil.
	OnQueueDepth func(int)
	OnQueueWait  func(time.Duration)
	// OnEvaluated is told of every evaluation a worker completes, for metrics: the evidence
	// (nil for a reference that does not parse), the verdict, the time it took, and whether
	// some evidence could not be gathered.
	OnEvaluated func(ev *reputation.Evidence, v *reputation.Verdict, elapsed time.Duration, incomplete bool)
	// OnForgotten is told of each image forgotten because no pod uses it, and its last verdict.
	OnForgotten func(image string, v *reputation.Verdict)
	// MaxQueuedPerNamespace bounds the first-seen images one namespace has waiting in its own
	// lane of the queue (see fairQueue); further ones wait in the background lane, behind every
	// other namespace's turn. Zero: DefaultMaxQueuedPerNamespace.
	MaxQueuedPerNamespace int
}

// DefaultRescoreEvery is how often the scheduler rescores images with runtime behavior; the
// args do not set it.
const DefaultRescoreEvery = time.Minute

// Engine evaluates each image once, in the background, and publishes verdicts into the cache.
type Engine struct {
	opts   Options
	policy atomic.Pointer[reputation.Policy] // swapped whole by SetPolicy

	queue *evalQueue
	// requested holds images asked for by pods and not yet published: the queue would queue an
	// image again if asked while a worker holds it, and a pod's request is answered by the
	// evaluation already under way.
	requested sync.Map

	// publishMu orders publications of verdicts, so that a rescore from memory never replaces a
	// verdict built from newer evidence; evidence holds what each published verdict was built on.
	publishMu sync.Mutex
	evidence  map[string]*reputation.Evidence
	// byKey indexes, under publishMu, the images whose evidence is filed under each behavior key
	// (digest, reference), and withBehavior those whose evidence holds behavior: a runtime event
	// re-weighs the images it concerns, and the periodic rescore the images with behavior,
	// without a pass over every image.
	byKey        map[string]map[string]struct{}
	withBehavior map[string]struct{}
	// peak is the most images evidence has held since the maps were last rebuilt (see shrink).
	peak int
	// checked holds, under publishMu, each image's signature evidence from its last complete
	// evaluation; failingSince when its evaluations began to fail.
	checked      map[string]checkedSignature
	failingSince map[string]time.Time
	// unusedSince holds, under publishMu, when an image was first found unused by any pod.
	unusedSince map[string]time.Time

	// laneMu guards the lane each queued first-seen image waits in (its requester's namespace)
	// and how many wait in each lane. An image without one waits in the background lane.
	laneMu sync.Mutex
	laneOf map[string]string
	inLane map[string]int
}

// DefaultForgetUnusedAfter is Options.ForgetUnusedAfter's default; DefaultMaxQueuedPerNamespace,
// Options.MaxQueuedPerNamespace's.
const (
	DefaultForgetUnusedAfter     = time.Hour
	DefaultMaxQueuedPerNamespace = 1000
)

// checkedSignature is signature evidence gathered in full, and when.
type checkedSignature struct {
	signature      reputation.SignatureEvidence
	resolvedDigest string
	at             time.Time
}

// New builds an engine; Run starts its workers. Requests made before Run wait in the queue.
func New(opts Options) *Engine {
	if opts.Policy == nil {
		opts.Policy = reputation.DefaultPolicy()
	}
	if opts.Cache == nil {
		opts.Cache = reputation.NewCache()
	}
	if opts.Workers <= 0 {
		opts.Workers = configv1.DefaultWorkers
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = configv1.DefaultRetryAfter
	}
	if opts.MaxRetryAfter < opts.RetryAfter {
		opts.MaxRetryAfter = max(configv1.DefaultMaxRetryAfter, opts.RetryAfter)
	}
	if opts.ForgetUnusedAfter <= 0 {
		opts.ForgetUnusedAfter = DefaultForgetUnusedAfter
	}
	if opts.MaxQueuedPerNamespace <= 0 {
		opts.MaxQueuedPerNamespace = DefaultMaxQueuedPerNamespace
	}
	e := &Engine{opts: opts, evidence: map[string]*reputation.Evidence{}, byKey: map[string]map[string]struct{}{}, withBehavior: map[string]struct{}{},
		checked: map[string]checkedSignature{}, failingSince: map[string]time.Time{}, unusedSince: map[string]time.Time{},
		laneOf: map[string]string{}, inLane: map[string]int{}}
	e.queue = newEvalQueue(opts.Clock, opts.RetryAfter, opts.MaxRetryAfter, newFairQueue(e.lane), opts.OnQueueDepth)
	e.policy.Store(opts.Policy)
	return e
}

// lane is the queue lane an image waits in: its requester's namespace while it is a first-seen
// image with room in that lane, else the background lane "".
func (e *Engine) lane(image string) string {
	e.laneMu.Lock()
	defer e.laneMu.Unlock()
	return e.laneOf[image]
}

// assignLane files a first-seen image under its requester's namespace, if that lane has room.
func (e *Engine) assignLane(image, namespace string) {
	if namespace == "" {
		return
	}
	e.laneMu.Lock()
	defer e.laneMu.Unlock()
	if e.inLane[namespace] >= e.opts.MaxQueuedPerNamespace {
		return
	}
	e.laneOf[image] = namespace
	e.inLane[namespace]++
}

// leaveLane is called when a worker takes an image: later queuings of it (re-verification,
// retries) wait in the background lane.
func (e *Engine) leaveLane(image string) {
	e.laneMu.Lock()
	defer e.laneMu.Unlock()
	if ns, ok := e.laneOf[image]; ok {
		delete(e.laneOf, image)
		if e.inLane[ns]--; e.inLane[ns] <= 0 {
			delete(e.inLane, ns)
		}
	}
}

// Cache is the cache the engine publishes into.
func (e *Engine) Cache() *reputation.Cache { return e.opts.Cache }

// Policy is the policy in force.
func (e *Engine) Policy() *reputation.Policy { return e.policy.Load() }

// SetPolicy puts a policy in force for every evaluation from now on. Verdicts already published
// stand until Reweigh or a re-evaluation replaces them.
func (e *Engine) SetPolicy(p *reputation.Policy) { e.policy.Store(p) }

// Request asks for a verdict on an image as spelled in a pod spec, with no namespace to queue it
// under (see RequestFor).
func (e *Engine) Request(image string) { e.RequestFor(image, "") }

// RequestFor asks for a verdict on an image as spelled in a pod spec of the namespace. It never
// blocks and does no I/O, so it is safe to call from the scheduler's queue. Repeated requests are
// coalesced. The image waits in its namespace's lane of the queue, so one namespace's flood of
// unique images delays the others by at most one image per turn.
func (e *Engine) RequestFor(image, namespace string) {
	if e.opts.Cache.Get(image) != nil {
		return
	}
	if _, asked := e.requested.LoadOrStore(image, struct{}{}); asked {
		return
	}
	// Checked again: a worker publishes before it forgets the request, so an image neither
	// requested nor cached here has truly not been evaluated.
	if e.opts.Cache.Get(image) != nil {
		e.requested.Delete(image)
		return
	}
	e.assignLane(image, namespace)
	now := e.opts.Clock.Now()
	e.queue.Add(image, now)
	if e.opts.Wait > 0 {
		// Dated by the request, not read from the clock when the timer fires: a fake clock runs
		// timers while it holds its own lock.
		due := now.Add(e.opts.Wait)
		e.opts.Clock.AfterFunc(e.opts.Wait, func() {
			e.opts.Cache.PublishIfAbsent(image, reputation.Pending(image, e.opts.Wait, e.Policy(), due))
		})
	}
}

// Reevaluate queues every image whose current verdict matches, e.g. when a vulnerability report
// about its digest arrives. The current verdicts stand until the new ones are published.
func (e *Engine) Reevaluate(match func(image string, v *reputation.Verdict) bool) int {
	n, now := 0, e.opts.Clock.Now()
	for image, v := range e.opts.Cache.Snapshot() {
		if match(image, v) {
			e.queue.Add(image, now)
			n++
		}
	}
	return n
}

// Run evaluates queued images until ctx is done; then the queue shuts down, and nothing is
// evaluated again.
func (e *Engine) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if e.opts.RescoreEvery > 0 {
		wg.Go(func() {
			tick := e.opts.Clock.NewTicker(e.opts.RescoreEvery)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C():
					e.RescoreBehavior()
				}
			}
		})
	}
	for range e.opts.Workers {
		wg.Go(func() {
			for e.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	e.queue.ShutDown()
	wg.Wait()
}

// processNext evaluates one image. The next evaluation is scheduled before the verdict is
// published, so whoever sees the verdict can rely on it: soon, with backoff, when evidence was
// missing; after ReverifyAfter when it was complete. The verdict stands until then.
func (e *Engine) processNext(ctx context.Context) bool {
	image, waited, shutdown := e.queue.Get()
	if shutdown {
		return false
	}
	defer e.queue.Done(image)
	if e.opts.OnQueueWait != nil {
		e.opts.OnQueueWait(waited)
	}
	e.leaveLane(image)
	if e.forgetUnused(image) {
		return true
	}
	start := e.opts.Clock.Now()
	ev, v, incomplete := e.evaluate(ctx, image)
	elapsed := e.opts.Clock.Since(start)
	ev, v = e.staleWhileError(image, ev, v, incomplete, start)
	switch {
	case ctx.Err() != nil:
	case incomplete:
		e.queue.Backoff(image)
	default:
		e.queue.Forget(image)
		if again := e.reverifyAfter(ev); again > 0 {
			e.queue.After(image, again)
		}
	}
	if e.opts.OnEvaluated != nil {
		e.opts.OnEvaluated(ev, v, elapsed, incomplete)
	}
	e.publish(image, ev, v)
	e.requested.Delete(image)
	return true
}

// forgetUnused drops everything kept about an image that no pod has used for
// ForgetUnusedAfter and none asked for: its verdict, evidence and last checked signature, and
// its place in the queue. The first time an image is found unused it is evaluated as usual.
func (e *Engine) forgetUnused(image string) bool {
	if e.opts.InUse == nil {
		return false
	}
	_, asked := e.requested.Load(image)
	used := asked || e.opts.InUse(image)
	now := e.opts.Clock.Now()
	e.publishMu.Lock()
	defer e.publishMu.Unlock()
	if used {
		delete(e.unusedSince, image)
		return false
	}
	since, seen := e.unusedSince[image]
	if !seen {
		e.unusedSince[image] = now
		return false
	}
	if now.Sub(since) < e.opts.ForgetUnusedAfter {
		return false
	}
	e.queue.Drop(image)
	e.setEvidence(image, nil)
	delete(e.checked, image)
	delete(e.failingSince, image)
	delete(e.unusedSince, image)
	e.shrink()
	if v := e.opts.Cache.Forget(image); v != nil && e.opts.OnForgotten != nil {
		e.opts.OnForgotten(image, v)
	}
	return true
}

// reverifyAfter is when a complete verdict's evidence is gathered again: a tag sooner.
func (e *Engine) reverifyAfter(ev *reputation.Evidence) time.Duration {
	again := e.opts.ReverifyAfter
	if ev != nil && ev.Image.Digest == "" && e.opts.TagTTL > 0 && (again <= 0 || e.opts.TagTTL < again) {
		again = e.opts.TagTTL
	}
	return again
}

// staleWhileError keeps what a complete evaluation verified while the registry cannot be
// reached: an evaluation that failed to gather signature evidence (no answer, 5xx, timeout)
// reuses the last checked signature for MaxStaleness, and its explanation says so. Past that
// window the failure stands (the image is unknown, never invalid). Every verdict built from
// incomplete evidence is marked so, for the mover to leave running pods alone.
func (e *Engine) staleWhileError(image string, ev *reputation.Evidence, v *reputation.Verdict, incomplete bool, now time.Time) (*reputation.Evidence, *reputation.Verdict) {
	e.publishMu.Lock()
	defer e.publishMu.Unlock()
	if !incomplete {
		delete(e.failingSince, image)
		if ev != nil && ev.Signature != nil {
			e.checked[image] = checkedSignature{signature: *ev.Signature, resolvedDigest: ev.ResolvedDigest, at: now}
		}
		return ev, v
	}
	since, failing := e.failingSince[image]
	if !failing {
		since = now
		e.failingSince[image] = since
	}
	last, ok := e.checked[image]
	if ev != nil && ev.Image.Digest != "" && ev.Signature != nil && ev.Signature.State == reputation.SignatureError && ok && now.Sub(last.at) <= e.opts.MaxStaleness {
		stale := *ev
		sig := last.signature
		sig.Detail = fmt.Sprintf("%s (checked %s ago; registry unreachable since %s: %s)", sig.Detail,
			now.Sub(last.at).Round(time.Second), since.UTC().Format(time.RFC3339), ev.Signature.Detail)
		stale.Signature = &sig
		if stale.ResolvedDigest == "" {
			stale.ResolvedDigest = last.resolvedDigest
		}
		ev, v = &stale, reputation.Evaluate(e.Policy(), &stale, now)
	}
	v.Incomplete = true
	return ev, v
}

// publish records the evidence a verdict was built on and publishes the verdict.
func (e *Engine) publish(image string, ev *reputation.Evidence, v *reputation.Verdict) {
	e.publishMu.Lock()
	defer e.publishMu.Unlock()
	if ev != nil {
		e.setEvidence(image, ev)
	}
	e.opts.Cache.Publish(image, v)
}

// shrink rebuilds the per-image maps once they hold a quarter of their peak: Go maps keep their
// space after deletes, so the space a flood of one-off images took would otherwise stay after
// they are forgotten. Amortized, it costs O(1) per forgotten image. publishMu is held.
func (e *Engine) shrink() {
	if !shrink.Due(len(e.evidence), e.peak) {
		return
	}
	e.evidence, e.byKey, e.withBehavior = shrink.Map(e.evidence), shrink.Map(e.byKey), shrink.Map(e.withBehavior)
	e.checked, e.failingSince, e.unusedSince = shrink.Map(e.checked), shrink.Map(e.failingSince), shrink.Map(e.unusedSince)
	e.peak = len(e.evidence)
	e.laneMu.Lock()
	e.laneOf, e.inLane = shrink.Map(e.laneOf), shrink.Map(e.inLane)
	e.laneMu.Unlock()
	e.queue.compact()
}

// setEvidence keeps an image's evidence and its place in the indexes; ev nil drops both.
// publishMu is held.
func (e *Engine) setEvidence(image string, ev *reputation.Evidence) {
	if old := e.evidence[image]; old != nil {
		for _, k := range reputation.BehaviorKeys(old) {
			if images := e.byKey[k]; images != nil {
				delete(images, image)
				if len(images) == 0 {
					delete(e.byKey, k)
				}
			}
		}
	}
	delete(e.withBehavior, image)
	if ev == nil {
		delete(e.evidence, image)
		return
	}
	e.evidence[image] = ev
	e.peak = max(e.peak, len(e.evidence))
	for _, k := range reputation.BehaviorKeys(ev) {
		if k == "" {
			continue
		}
		if e.byKey[k] == nil {
			e.byKey[k] = map[string]struct{}{}
		}
		e.byKey[k][image] = struct{}{}
	}
	if len(ev.Behavior) > 0 {
		e.withBehavior[image] = struct{}{}
	}
}

// RescoreKeys re-weighs, from memory, the images whose evidence is filed under any of the
// behavior keys (digests, references) a runtime event names: the local sources are read again and
// each verdict republished if its outcome changed. No registry or report is consulted, so a
// Falco alert re-tiers an image in microseconds whatever the state of the registry, and the cost
// is the images concerned, not every image known. Images not yet evaluated are left to their
// evaluation, which reads the local sources too. It returns how many verdicts changed.
func (e *Engine) RescoreKeys(keys []string) int {
	e.publishMu.Lock()
	var images []string
	for _, k := range keys {
		for image := range e.byKey[k] {
			if !slices.Contains(images, image) {
				images = append(images, image)
			}
		}
	}
	e.publishMu.Unlock()
	return e.reweighImages(images, nil)
}

// RescoreBehavior re-weighs the images whose evidence holds runtime behavior, so that decaying
// penalties lift on time.
func (e *Engine) RescoreBehavior() int {
	e.publishMu.Lock()
	images := slices.Collect(maps.Keys(e.withBehavior))
	e.publishMu.Unlock()
	return e.reweighImages(images, nil)
}

// Reweigh re-weighs every image from the evidence already gathered, under the policy in force
// (after SetPolicy), and republishes the verdicts whose outcome changed; no I/O. adjust, when
// set, may first withdraw evidence the new policy no longer accepts (a signature by a key that
// is no longer trusted) from a copy. It returns how many verdicts changed.
func (e *Engine) Reweigh(adjust func(ev *reputation.Evidence)) int {
	e.publishMu.Lock()
	images := slices.Collect(maps.Keys(e.evidence))
	e.publishMu.Unlock()
	return e.reweighImages(images, adjust)
}

// reweighImages re-weighs each image from its last gathered evidence.
func (e *Engine) reweighImages(images []string, adjust func(ev *reputation.Evidence)) int {
	changed := 0
	for _, image := range images {
		e.publishMu.Lock()
		last, old := e.evidence[image], e.opts.Cache.Get(image)
		if last == nil || old == nil {
			e.publishMu.Unlock()
			continue
		}
		ev := e.reread(last, adjust)
		v := reputation.Evaluate(e.Policy(), ev, e.opts.Clock.Now())
		e.setEvidence(image, ev)
		if !reputation.SameOutcome(old, v) {
			e.opts.Cache.Publish(image, v)
			changed++
		}
		e.publishMu.Unlock()
	}
	return changed
}

// reread copies gathered evidence, applies adjust, and reads the local sources again.
func (e *Engine) reread(last *reputation.Evidence, adjust func(ev *reputation.Evidence)) *reputation.Evidence {
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
	Before, After *reputation.Verdict
}

// Simulate weighs every image's gathered evidence under a proposed policy and returns each
// image's current and proposed verdicts, changing nothing. Images whose evidence has not been
// gathered since the scheduler started (verdicts warmed from the store) cannot be weighed and
// are returned in notGathered. adjust is as for Reweigh.
func (e *Engine) Simulate(proposed *reputation.Policy, adjust func(ev *reputation.Evidence)) (out []Simulation, notGathered []string) {
	for image, before := range e.opts.Cache.Snapshot() {
		e.publishMu.Lock()
		last := e.evidence[image]
		var ev *reputation.Evidence
		if last != nil {
			ev = e.reread(last, adjust)
		}
		e.publishMu.Unlock()
		if ev == nil {
			notGathered = append(notGathered, image)
			continue
		}
		out = append(out, Simulation{Image: image, Before: before, After: reputation.Evaluate(proposed, ev, e.opts.Clock.Now())})
	}
	return out, notGathered
}

// Evaluate gathers evidence for one image and weighs it under the current policy.
func (e *Engine) Evaluate(ctx context.Context, image string) *reputation.Verdict {
	_, v, _ := e.evaluate(ctx, image)
	return v
}

// evaluate also returns the evidence (nil when the reference does not parse) and reports
// whether some of it could not be gathered.
func (e *Engine) evaluate(ctx context.Context, image string) (_ *reputation.Evidence, _ *reputation.Verdict, incomplete bool) {
	ref, err := reputation.ParseImageRef(image)
	if err != nil {
		// Re-reading the same string cannot make it parse: no retry.
		return nil, reputation.Unassessable(image, err, e.Policy(), e.opts.Clock.Now()), false
	}
	ev := &reputation.Evidence{Image: ref}
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
	return ev, reputation.Evaluate(e.Policy(), ev, e.opts.Clock.Now()), incomplete
}
