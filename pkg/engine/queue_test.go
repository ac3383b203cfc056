package engine

import (
	"slices"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

// newTestQueue is an evalQueue on a fake clock with one lane, retrying after 1s up to 8s.
func newTestQueue() (*evalQueue, *testingclock.FakeClock) {
	clk := testingclock.NewFakeClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	return newEvalQueue(clk, time.Second, 8*time.Second, newFairQueue(func(string) string { return "" }), nil), clk
}

// drain takes every ready image, in order, and releases each.
func drain(q *evalQueue) []string {
	var got []string
	for q.Len() > 0 {
		image, _, _ := q.Get()
		q.Done(image)
		got = append(got, image)
	}
	return got
}

func TestEvalQueue(t *testing.T) {
	tests := []struct {
		name string
		// run acts on the queue and returns what became ready, in order.
		run  func(q *evalQueue, clk *testingclock.FakeClock) []string
		want []string
	}{{
		name: "an image added twice is queued once",
		run: func(q *evalQueue, clk *testingclock.FakeClock) []string {
			q.Add("a", clk.Now())
			q.Add("b", clk.Now())
			q.Add("a", clk.Now())
			return drain(q)
		},
		want: []string{"a", "b"},
	}, {
		name: "an image added while a worker holds it is queued again when the worker is done",
		run: func(q *evalQueue, clk *testingclock.FakeClock) []string {
			q.Add("a", clk.Now())
			image, _, _ := q.Get()
			q.Add("a", clk.Now())
			q.Add("a", clk.Now())
			if q.Len() != 0 {
				t.Errorf("queued while held: %d", q.Len())
			}
			q.Done(image)
			return drain(q)
		},
		want: []string{"a"},
	}, {
		name: "scheduling again replaces the earlier schedule: one evaluation ahead",
		run: func(q *evalQueue, clk *testingclock.FakeClock) []string {
			q.After("a", time.Hour)
			q.After("a", 2*time.Hour)
			clk.Step(time.Hour)
			early := drain(q)
			clk.Step(time.Hour)
			return append(early, drain(q)...)
		},
		want: []string{"a"},
	}, {
		name: "a dropped image's schedule never fires",
		run: func(q *evalQueue, clk *testingclock.FakeClock) []string {
			q.After("a", time.Hour)
			q.After("b", time.Hour)
			q.Drop("a")
			clk.Step(time.Hour)
			return drain(q)
		},
		want: []string{"b"},
	}, {
		name: "a shut down queue drops what waits and what is scheduled",
		run: func(q *evalQueue, clk *testingclock.FakeClock) []string {
			q.Add("a", clk.Now())
			q.After("b", time.Hour)
			q.ShutDown()
			clk.Step(time.Hour)
			q.Add("c", clk.Now())
			if _, _, shutdown := q.Get(); !shutdown {
				t.Error("Get after ShutDown did not report it")
			}
			return drain(q)
		},
		want: nil,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, clk := newTestQueue()
			if got := tc.run(q, clk); !slices.Equal(got, tc.want) {
				t.Errorf("ready %q, want %q", got, tc.want)
			}
			if n := q.Scheduled(); n != 0 {
				t.Errorf("%d schedules left", n)
			}
		})
	}
}

// Backoff doubles from RetryAfter per consecutive failure, caps at MaxRetryAfter, and starts
// over after Forget.
func TestEvalQueueBacksOffExponentially(t *testing.T) {
	q, clk := newTestQueue()
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		q.Backoff("a")
		clk.Step(want - time.Millisecond)
		if q.Len() != 0 {
			t.Fatalf("retried before %v", want)
		}
		clk.Step(time.Millisecond)
		if got := drain(q); !slices.Equal(got, []string{"a"}) {
			t.Fatalf("after %v: ready %q", want, got)
		}
	}
	q.Forget("a")
	if n := q.Failures("a"); n != 0 {
		t.Fatalf("failures after Forget: %d", n)
	}
	q.Backoff("a")
	clk.Step(time.Second)
	if got := drain(q); !slices.Equal(got, []string{"a"}) {
		t.Errorf("after Forget the backoff did not start over at 1s: ready %q", got)
	}
}

// The wait Get reports runs from when the image was queued: for a scheduled image, from when
// it was due.
func TestEvalQueueReportsTheWait(t *testing.T) {
	q, clk := newTestQueue()
	q.After("a", time.Minute)
	clk.Step(time.Minute)
	clk.Step(3 * time.Second)
	image, waited, _ := q.Get()
	if image != "a" || waited != 3*time.Second {
		t.Errorf("Get = %q after %v, want a after 3s", image, waited)
	}
}
