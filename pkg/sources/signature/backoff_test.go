package signature

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/reputation"
)

func TestRegistryBackoffDoublesAndResets(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Unix(1_800_000_000, 0))
	b := NewRegistryBackoff(time.Second, 5*time.Second, clk)
	steps := []struct {
		advance     time.Duration
		record      *bool // nil: only ask
		wantAllowed bool
	}{
		{0, nil, true},
		{0, new(true), false}, // 1st failure: 1s
		{999 * time.Millisecond, nil, false},
		{time.Millisecond, nil, true}, // the probe
		{0, new(true), false},         // 2nd failure: 2s
		{1999 * time.Millisecond, nil, false},
		{time.Millisecond, new(true), false}, // 3rd: 4s
		{4 * time.Second, new(true), false},  // 4th: capped at 5s
		{4999 * time.Millisecond, nil, false},
		{time.Millisecond, new(false), true}, // an answer ends it
		{0, nil, true},
	}
	for i, s := range steps {
		clk.Step(s.advance)
		if s.record != nil {
			b.Record("r.example", *s.record, "connection refused")
		}
		if ok, why := b.Allow("r.example"); ok != s.wantAllowed {
			t.Fatalf("step %d: allowed %v (%s), want %v", i, ok, why, s.wantAllowed)
		}
		if ok, _ := b.Allow("other.example"); !ok {
			t.Fatalf("step %d: another registry was held back", i)
		}
	}
}

// Registry hosts come from image references anyone can write: a flood of failing hosts leaves
// no more than the bound behind once their backoff has passed.
func TestRegistryBackoffForgetsPassedFailures(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Unix(1_800_000_000, 0))
	b := NewRegistryBackoff(time.Second, 5*time.Second, clk)
	for i := range 3 * maxTrackedRegistries {
		b.Record(fmt.Sprintf("r%d.example", i), true, "connection refused")
	}
	clk.Step(11 * time.Second) // past twice the maximum: flowcontrol.Backoff's expiry
	b.Record("last.example", true, "connection refused")
	if n := len(b.failures); n > maxTrackedRegistries {
		t.Errorf("%d failures kept after the flood's backoff passed, want at most %d", n, maxTrackedRegistries)
	}
	if ok, why := b.Allow("last.example"); ok || !strings.Contains(why, "1 failures in a row") {
		t.Errorf("the newest failure: allowed %v (%q), want held back", ok, why)
	}
	if ok, _ := b.Allow("r0.example"); !ok {
		t.Error("a registry whose backoff passed is still held back")
	}
}

// A registry answering 503 is asked once; its other images fail fast with the reason, and
// the images of other registries are not held back.
func TestSourceBacksOffFromAFailingRegistry(t *testing.T) {
	var requests atomic.Int32
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	t.Cleanup(failing.Close)
	healthy := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(healthy.Close)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := cryptoutils.MarshalPublicKeyToPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	eval := config.EvaluationSpec{}
	eval.RegistryTimeout.Duration, eval.RegistryBackoff.Duration, eval.MaxRegistryBackoff.Duration = time.Second, time.Minute, time.Hour
	src, err := NewSource(config.SignaturePolicy{Keys: []config.SigningKey{{Name: "ops", PublicKey: string(pem)}}}, eval)
	if err != nil {
		t.Fatal(err)
	}
	collect := func(server *httptest.Server, repo string) *reputation.SignatureEvidence {
		ref, err := reputation.ParseImageRef(strings.TrimPrefix(server.URL, "http://") + "/team/" + repo + "@" + digestA)
		if err != nil {
			t.Fatal(err)
		}
		ev := &reputation.Evidence{Image: ref}
		_ = src.Collect(context.Background(), ev)
		return ev.Signature
	}
	first := collect(failing, "a")
	// go-containerregistry retries a 503 until the registry timeout; either is the reason.
	if first.State != reputation.SignatureError || !strings.Contains(first.Detail, "503") && !strings.Contains(first.Detail, "deadline") {
		t.Fatalf("first image: %+v, want an error naming the 503 or the timeout", first)
	}
	asked := requests.Load()
	for _, repo := range []string{"b", "c", "d"} {
		if got := collect(failing, repo); got.State != reputation.SignatureError || !strings.Contains(got.Detail, "backing off") {
			t.Errorf("image %s: %+v, want a fast failure that says the registry is backed off from", repo, got)
		}
	}
	if n := requests.Load(); n != asked {
		t.Errorf("the failing registry got %d more requests while backed off from", n-asked)
	}
	start := time.Now()
	if got := collect(healthy, "e"); strings.Contains(got.Detail, "backing off") {
		t.Errorf("a healthy registry was held back: %+v", got)
	}
	t.Logf("healthy registry answered in %s", time.Since(start))
}
