package signature

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/clock"
)

// RegistryBackoff keeps a failing registry from being asked again for every one of its images:
// after a failure its images fail fast, without a request, for a delay that doubles with each
// consecutive failure (client-go's flowcontrol.Backoff keeps the delays). The first request
// after the delay probes the registry again.
type RegistryBackoff struct {
	backoff *flowcontrol.Backoff
	clock   clock.Clock

	mu sync.Mutex
	// failures says why each registry is held back, for as long as it is: hosts come from image
	// references anyone can write, so entries are dropped once their backoff has passed.
	failures map[string]registryFailure
}

type registryFailure struct {
	at      time.Time
	inARow  int
	lastErr string
}

// maxTrackedRegistries bounds the failures kept before expired ones are swept.
const maxTrackedRegistries = 1024

// NewRegistryBackoff starts at initial and doubles up to max, on clk.
func NewRegistryBackoff(initial, max time.Duration, clk clock.Clock) *RegistryBackoff {
	return &RegistryBackoff{backoff: flowcontrol.NewFakeBackOff(initial, max, clk), clock: clk, failures: map[string]registryFailure{}}
}

// Allow reports whether the registry may be asked now, and if not, why.
func (b *RegistryBackoff) Allow(registry string) (bool, string) {
	now := b.clock.Now()
	if !b.backoff.IsInBackOffSinceUpdate(registry, now) {
		return true, ""
	}
	b.mu.Lock()
	f := b.failures[registry]
	b.mu.Unlock()
	wait := f.at.Add(b.backoff.Get(registry)).Sub(now)
	return false, fmt.Sprintf("registry %s backing off for %s after %d failures in a row (last: %s)", registry, wait.Round(time.Millisecond), f.inARow, f.lastErr)
}

// Record notes the outcome of asking the registry: a failure extends the backoff, anything
// else ends it.
func (b *RegistryBackoff) Record(registry string, failed bool, detail string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !failed {
		b.backoff.Reset(registry)
		delete(b.failures, registry)
		return
	}
	now := b.clock.Now()
	b.backoff.Next(registry, now)
	f := b.failures[registry]
	b.failures[registry] = registryFailure{at: now, inARow: f.inARow + 1, lastErr: detail}
	if len(b.failures) > maxTrackedRegistries {
		b.backoff.GC()
		for r := range b.failures {
			if !b.backoff.IsInBackOffSinceUpdate(r, now) {
				delete(b.failures, r)
			}
		}
	}
}

// isUnreachable tells a registry that is down or overloaded (no answer, a timeout, 5xx, 429)
// from one that answered: only the former is worth backing off from.
func isUnreachable(err error) bool {
	if err == nil {
		return false
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode >= 500 || terr.StatusCode == 429
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded)
}
