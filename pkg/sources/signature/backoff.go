package signature

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// RegistryBackoff keeps a failing registry from being asked again for every one of its images:
// after a failure its images fail fast, without a request, for a delay that doubles with each
// consecutive failure. The first request after the delay probes the registry again.
type RegistryBackoff struct {
	Initial, Max time.Duration
	Now          func() time.Time

	mu    sync.Mutex
	state map[string]*registryState
}

type registryState struct {
	failures int
	until    time.Time
	lastErr  string
}

// Allow reports whether the registry may be asked now, and if not, why.
func (b *RegistryBackoff) Allow(registry string) (bool, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.state[registry]
	if st == nil {
		return true, ""
	}
	if wait := st.until.Sub(b.now()); wait > 0 {
		return false, fmt.Sprintf("registry %s backing off for %s after %d failures in a row (last: %s)", registry, wait.Round(time.Millisecond), st.failures, st.lastErr)
	}
	return true, ""
}

// Record notes the outcome of asking the registry: a failure extends the backoff, anything
// else ends it.
func (b *RegistryBackoff) Record(registry string, failed bool, detail string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !failed {
		delete(b.state, registry)
		return
	}
	if b.state == nil {
		b.state = map[string]*registryState{}
	}
	st := b.state[registry]
	if st == nil {
		st = &registryState{}
		b.state[registry] = st
	}
	st.failures++
	st.lastErr = detail
	st.until = b.now().Add(min(b.Initial<<min(st.failures-1, 20), b.Max))
}

func (b *RegistryBackoff) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
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
