package engine

import (
	"slices"
	"testing"
)

// Lanes are served round-robin, each in its own order, and a lane that empties leaves the ring.
func TestFairQueueServesLanesInTurn(t *testing.T) {
	laneOf := map[string]string{"f1": "flood", "f2": "flood", "f3": "flood", "f4": "flood", "a1": "team-a", "a2": "team-a", "b1": "team-b", "r1": ""}
	tests := []struct {
		name   string
		pushes []string
		want   []string
	}{
		{"one lane is FIFO", []string{"f1", "f2", "f3"}, []string{"f1", "f2", "f3"}},
		{"a flood first does not hold the others back", []string{"f1", "f2", "f3", "f4", "a1", "b1", "a2", "r1"},
			[]string{"f1", "a1", "b1", "r1", "f2", "a2", "f3", "f4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newFairQueue(func(image string) string { return laneOf[image] })
			for _, img := range tt.pushes {
				q.Push(img)
			}
			var got []string
			for q.Len() > 0 {
				got = append(got, q.Pop())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("served %v, want %v", got, tt.want)
			}
			if len(q.lanes) != 0 || len(q.ring) != 0 {
				t.Errorf("empty queue keeps lanes %v ring %d", q.lanes, len(q.ring))
			}
		})
	}
}

// Pushes between pops join their lane's turn: a lane that comes back is served in the ring.
func TestFairQueueInterleavedPushes(t *testing.T) {
	q := newFairQueue(func(image string) string { return image[:1] })
	q.Push("a1")
	q.Push("a2")
	if got := q.Pop(); got != "a1" {
		t.Fatalf("first = %s", got)
	}
	q.Push("b1")
	q.Push("a3")
	var got []string
	for q.Len() > 0 {
		got = append(got, q.Pop())
	}
	// Lane a was just served, so the newcomer b goes next.
	if want := []string{"b1", "a2", "a3"}; !slices.Equal(got, want) {
		t.Errorf("served %v, want %v", got, want)
	}
}
