package engine

import (
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/repute-dev/repute/pkg/shrink"
)

// evalQueue is the engine's work queue, with client-go's workqueue semantics where the engine
// relies on them: an image is queued once however often it is added, an image added while a
// worker holds it is queued again when the worker is done, failed evaluations back off
// exponentially, and re-verification is scheduled for later. It is the engine's own rather than
// client-go's because every per-image structure it keeps must give back its space once a flood
// of one-off images is forgotten: client-go's sets and delay map keep their peak size (Go maps
// do not shrink) and its delay heap keeps popped entries in its array, which held 12% of a
// 100,000-image flood's memory after the images were forgotten. compact rebuilds everything
// here at the size it holds.
//
// A scheduled image has one clock timer; scheduling it again replaces the timer, so an image
// has at most one evaluation ahead of it, however it was asked for. Timers run on the engine's
// clock. A fake clock runs them while holding its own lock, so nothing here calls the clock
// while holding mu: the time an image was queued is passed in, never read under the lock.
type evalQueue struct {
	clock                     clock.WithTickerAndDelayedExecution
	retryAfter, maxRetryAfter time.Duration
	// onDepth is told how many images wait to be taken, after every change (a gauge).
	onDepth func(int)

	mu   sync.Mutex
	cond *sync.Cond
	// ready holds the images waiting for a worker, in their lanes; queuedAt says since when.
	ready    *fairQueue
	queuedAt map[string]time.Time
	// processing holds the images workers hold; again, those added meanwhile, and since when.
	processing map[string]struct{}
	again      map[string]time.Time
	// scheduled holds each image's one timer, by generation: a timer that fires after it was
	// replaced or cancelled finds another generation, or none, and does nothing.
	scheduled  map[string]scheduledRun
	generation uint64
	// failures counts each image's consecutive incomplete evaluations, for its backoff.
	failures map[string]int
	shutdown bool
}

type scheduledRun struct {
	generation uint64
	timer      clock.Timer // nil until AfterFunc returns
}

func newEvalQueue(clk clock.WithTickerAndDelayedExecution, retryAfter, maxRetryAfter time.Duration, ready *fairQueue, onDepth func(int)) *evalQueue {
	if onDepth == nil {
		onDepth = func(int) {}
	}
	q := &evalQueue{clock: clk, retryAfter: retryAfter, maxRetryAfter: maxRetryAfter, onDepth: onDepth, ready: ready}
	q.cond = sync.NewCond(&q.mu)
	q.allocate()
	return q
}

// allocate (re)makes the per-image maps at the size of what they hold. mu is held or q is new.
func (q *evalQueue) allocate() {
	q.queuedAt, q.processing, q.again = shrink.Map(q.queuedAt), shrink.Map(q.processing), shrink.Map(q.again)
	q.scheduled, q.failures = shrink.Map(q.scheduled), shrink.Map(q.failures)
}

// Add queues an image now, as of at; see addLocked.
func (q *evalQueue) Add(image string, at time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(image, at)
}

// addLocked queues an image unless it is queued already; an image a worker holds is queued
// again once the worker is done with it. at is when it began to wait. mu is held.
func (q *evalQueue) addLocked(image string, at time.Time) {
	if q.shutdown {
		return
	}
	if _, queued := q.queuedAt[image]; queued {
		return
	}
	if _, held := q.processing[image]; held {
		if _, ok := q.again[image]; !ok {
			q.again[image] = at
		}
		return
	}
	q.queuedAt[image] = at
	q.ready.Push(image)
	q.onDepth(q.ready.Len())
	q.cond.Signal()
}

// Get waits for an image and hands it to the caller, who must call Done with it; it reports how
// long the image waited. shutdown is true once the queue is shut down.
func (q *evalQueue) Get() (image string, waited time.Duration, shutdown bool) {
	q.mu.Lock()
	for q.ready.Len() == 0 && !q.shutdown {
		q.cond.Wait()
	}
	if q.shutdown {
		q.mu.Unlock()
		return "", 0, true
	}
	image = q.ready.Pop()
	at := q.queuedAt[image]
	delete(q.queuedAt, image)
	q.processing[image] = struct{}{}
	q.onDepth(q.ready.Len())
	q.mu.Unlock()
	// Read after unlocking: the clock is never called under mu.
	return image, max(q.clock.Since(at), 0), false
}

// Done releases an image a worker held; if it was added meanwhile, it is queued again.
func (q *evalQueue) Done(image string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, image)
	if at, ok := q.again[image]; ok {
		delete(q.again, image)
		q.addLocked(image, at)
	}
}

// After schedules the image's next evaluation in d, replacing any scheduled before.
func (q *evalQueue) After(image string, d time.Duration) {
	due := q.clock.Now().Add(d)
	q.mu.Lock()
	if q.shutdown {
		q.mu.Unlock()
		return
	}
	q.generation++
	gen := q.generation
	replaced := q.scheduled[image].timer
	q.scheduled[image] = scheduledRun{generation: gen}
	q.mu.Unlock()
	if replaced != nil {
		replaced.Stop()
	}
	// Outside mu: a fake clock takes its own lock here, and holds it while running timers.
	timer := q.clock.AfterFunc(d, func() { q.fire(image, gen, due) })
	q.mu.Lock()
	defer q.mu.Unlock()
	if run, ok := q.scheduled[image]; ok && run.generation == gen {
		q.scheduled[image] = scheduledRun{generation: gen, timer: timer}
		return
	}
	timer.Stop() // replaced, cancelled or fired already; Stop on a fired timer does nothing
}

// fire queues a scheduled image whose timer is still the current one.
func (q *evalQueue) fire(image string, gen uint64, due time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if run, ok := q.scheduled[image]; !ok || run.generation != gen {
		return
	}
	delete(q.scheduled, image)
	q.addLocked(image, due)
}

// Backoff schedules an image whose evaluation was incomplete: RetryAfter, doubled for each
// consecutive failure, up to MaxRetryAfter.
func (q *evalQueue) Backoff(image string) {
	q.mu.Lock()
	n := q.failures[image]
	q.failures[image] = n + 1
	q.mu.Unlock()
	d := q.retryAfter
	for i := 0; i < n && d < q.maxRetryAfter; i++ {
		d *= 2
	}
	q.After(image, min(d, q.maxRetryAfter))
}

// Forget clears an image's backoff after a complete evaluation.
func (q *evalQueue) Forget(image string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.failures, image)
}

// Failures is how many consecutive incomplete evaluations the image's backoff counts.
func (q *evalQueue) Failures(image string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[image]
}

// Drop forgets everything about an image a worker holds: its backoff, its scheduled
// evaluation, and any request to queue it again.
func (q *evalQueue) Drop(image string) {
	q.mu.Lock()
	timer := q.scheduled[image].timer
	delete(q.scheduled, image)
	delete(q.failures, image)
	delete(q.again, image)
	q.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
}

// compact rebuilds the per-image maps at the size of what they hold (see Engine.shrink).
func (q *evalQueue) compact() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.allocate()
}

// Len is how many images wait for a worker; Scheduled, how many wait for their time.
func (q *evalQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ready.Len()
}

func (q *evalQueue) Scheduled() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.scheduled)
}

// ShutDown stops the queue: waiting workers return, queued images are dropped, and scheduled
// ones never run.
func (q *evalQueue) ShutDown() {
	q.mu.Lock()
	q.shutdown = true
	for q.ready.Len() > 0 {
		delete(q.queuedAt, q.ready.Pop())
	}
	var timers []clock.Timer
	for _, run := range q.scheduled {
		if run.timer != nil {
			timers = append(timers, run.timer)
		}
	}
	clear(q.scheduled)
	q.onDepth(0)
	q.cond.Broadcast()
	q.mu.Unlock()
	for _, t := range timers {
		t.Stop()
	}
}

// ShuttingDown reports whether ShutDown was called.
func (q *evalQueue) ShuttingDown() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shutdown
}
