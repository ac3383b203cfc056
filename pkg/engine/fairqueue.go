package engine

import "slices"

// fairQueue is the engine's workqueue storage (client-go's workqueue.Queue): one FIFO lane per
// namespace whose pods asked for first-seen images, and one background lane for everything else
// (re-verification, retries, re-evaluation), served round-robin one image at a time. A namespace
// that floods unique images fills its own lane only: every other namespace's next image is at
// most one round away, whatever the flood's size. The workqueue calls it under its own lock,
// from one goroutine at a time.
type fairQueue struct {
	laneOf func(image string) string
	lanes  map[string]*lane
	// ring lists the lanes with images, in the order they are served; next is the one to serve.
	ring []*lane
	next int
	len  int
}

type lane struct {
	name   string
	images []string
}

func newFairQueue(laneOf func(image string) string) *fairQueue {
	return &fairQueue{laneOf: laneOf, lanes: map[string]*lane{}}
}

// Touch leaves a queued image where it is: asking again does not jump the line.
func (q *fairQueue) Touch(string) {}

func (q *fairQueue) Push(image string) {
	name := q.laneOf(image)
	l := q.lanes[name]
	if l == nil {
		l = &lane{name: name}
		q.lanes[name] = l
		q.ring = append(q.ring, l)
	}
	l.images = append(l.images, image)
	q.len++
}

func (q *fairQueue) Len() int { return q.len }

// Pop takes the front image of the next lane in the ring; a lane left empty leaves the ring.
func (q *fairQueue) Pop() string {
	if q.next >= len(q.ring) {
		q.next = 0
	}
	l := q.ring[q.next]
	image := l.images[0]
	l.images[0] = ""
	l.images = l.images[1:]
	q.len--
	if len(l.images) == 0 {
		// Nothing may keep an emptied lane reachable: its array is as long as its longest queue.
		// slices.Delete clears the ring's vacated slot, which append would leave holding it.
		l.images = nil
		delete(q.lanes, l.name)
		q.ring = slices.Delete(q.ring, q.next, q.next+1)
	} else {
		q.next++
	}
	return image
}
