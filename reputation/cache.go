package reputation

import "sync"

// VerdictListener is told when the verdict for an image (as spelled in pod specs) is published.
// old is nil the first time. Listeners run on the publishing goroutine and must not block.
type VerdictListener func(image string, old, updated *Verdict)

// Cache holds the current verdict for every image the scheduler has asked about. The scheduling
// cycle reads it under a read lock: two map lookups per image, no allocation, no I/O.
//
// It is indexed by the image string exactly as pods spell it ("nginx:1.27", "reg/app@sha256:…"),
// because that is what the scheduling cycle has in hand; parsing references there would cost
// allocations on every cycle.
type Cache struct {
	mu        sync.RWMutex
	byImage   map[string]*Verdict
	listeners []VerdictListener
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{byImage: make(map[string]*Verdict)}
}

// Get returns the verdict for an image, or nil when it has none yet.
func (c *Cache) Get(image string) *Verdict {
	c.mu.RLock()
	v := c.byImage[image]
	c.mu.RUnlock()
	return v
}

// Len is the number of images with a verdict.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.byImage)
}

// Subscribe registers a listener for every later publication.
func (c *Cache) Subscribe(l VerdictListener) {
	c.mu.Lock()
	c.listeners = append(c.listeners, l)
	c.mu.Unlock()
}

// Publish sets the verdict for an image and tells the listeners. Verdicts are never mutated
// after publication, so readers may keep the pointer.
func (c *Cache) Publish(image string, v *Verdict) {
	c.mu.Lock()
	old := c.byImage[image]
	c.byImage[image] = v
	listeners := c.listeners
	c.mu.Unlock()
	for _, l := range listeners {
		l(image, old, v)
	}
}

// PublishIfAbsent publishes v only when the image has no verdict yet, and reports whether it did.
// It lets a provisional verdict lose any race against the real one.
func (c *Cache) PublishIfAbsent(image string, v *Verdict) bool {
	c.mu.Lock()
	if _, ok := c.byImage[image]; ok {
		c.mu.Unlock()
		return false
	}
	c.byImage[image] = v
	listeners := c.listeners
	c.mu.Unlock()
	for _, l := range listeners {
		l(image, nil, v)
	}
	return true
}

// Snapshot returns a copy of the image → verdict index, for reporting.
func (c *Cache) Snapshot() map[string]*Verdict {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]*Verdict, len(c.byImage))
	for k, v := range c.byImage {
		out[k] = v
	}
	return out
}
