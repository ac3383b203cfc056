package reputation

import "context"

// EvidenceSource gathers one kind of evidence about an image. Sources may do I/O (registries,
// report stores); they run only on engine workers, never on the scheduling cycle.
type EvidenceSource interface {
	Name() string
	Collect(ctx context.Context, ev *Evidence) error
}
