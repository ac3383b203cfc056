package reputation

import (
	"sync"
	"sync/atomic"
)

// VerdictListener is told when the verdict for an image (as spelled in pod specs) is published.
// old is nil the first time. Listeners run on the publishing goroutine and must not block.
type VerdictListener func(image string, old, updated *Verdict)

// Cache holds the current verdict for every image the scheduler has asked about. The scheduling
// cycle reads it without locks (sync.Map): one lookup per image, no allocation, no I/O, and
// readers never wait for the engine's writes.
//
// It is indexed by the image string exactly as pods spell it ("nginx:1.27", "reg/app@sha256:…"),
// because that is what the scheduling cycle has in hand; parsing references there would cost
// allocations on every cycle.
type Cache struct {
	byImage sync.Map // string → *Verdict
	size    atomic.Int64
	// generation counts changes, each counted after it is visible: a result computed from the
	// cache while Generation() stayed the same is still the cache's answer.
	generation atomic.Uint64

	mu        sync.Mutex
	listeners atomic.Pointer[[]VerdictListener]
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{} }

// Get returns the verdict for an image, or nil when it has none yet.
func (c *Cache) Get(image string) *Verdict {
	if v, ok := c.byImage.Load(image); ok {
		return v.(*Verdict)
	}
	return nil
}

// Generation changes whenever a verdict is published or forgotten.
func (c *Cache) Generation() uint64 { return c.generation.Load() }

// Len is the number of images with a verdict.
func (c *Cache) Len() int { return int(c.size.Load()) }

// Subscribe registers a listener for every later publication.
func (c *Cache) Subscribe(l VerdictListener) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next []VerdictListener
	if cur := c.listeners.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, l)
	c.listeners.Store(&next)
}

// Publish sets the verdict for an image and tells the listeners. Verdicts are never mutated
// after publication, so readers may keep the pointer.
func (c *Cache) Publish(image string, v *Verdict) {
	prev, loaded := c.byImage.Swap(image, v)
	var old *Verdict
	if loaded {
		old = prev.(*Verdict)
	} else {
		c.size.Add(1)
	}
	c.generation.Add(1)
	c.notify(image, old, v)
}

// PublishIfAbsent publishes v only when the image has no verdict yet, and reports whether it did.
// It lets a provisional verdict lose any race against the real one.
func (c *Cache) PublishIfAbsent(image string, v *Verdict) bool {
	if _, loaded := c.byImage.LoadOrStore(image, v); loaded {
		return false
	}
	c.size.Add(1)
	c.generation.Add(1)
	c.notify(image, nil, v)
	return true
}

func (c *Cache) notify(image string, old, v *Verdict) {
	if ls := c.listeners.Load(); ls != nil {
		for _, l := range *ls {
			l(image, old, v)
		}
	}
}

// Forget drops an image's verdict, for an image no pod uses any more, and returns it (nil if
// there was none). Listeners are not told: no pod is left to move, and a pod that uses the image
// later asks for it again.
func (c *Cache) Forget(image string) *Verdict {
	v, loaded := c.byImage.LoadAndDelete(image)
	if !loaded {
		return nil
	}
	c.size.Add(-1)
	c.generation.Add(1)
	return v.(*Verdict)
}

// Snapshot returns a copy of the image → verdict index, for reporting.
func (c *Cache) Snapshot() map[string]*Verdict {
	out := map[string]*Verdict{}
	c.byImage.Range(func(k, v any) bool {
		out[k.(string)] = v.(*Verdict)
		return true
	})
	return out
}
