package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/component-base/metrics/testutil"

	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/pkg/metrics"
	"github.com/repute-dev/repute/reputation/store"
	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/evidence"
	"github.com/repute-dev/repute/test/oci"
)

// A restarted scheduler places a pod by the verdict its store kept, at once, while the fresh
// verification is still waiting on a slow registry: no cold start turns a trusted image unknown.
// Every placement is in the store.
func TestRestartWarmsTheCacheFromTheStore(t *testing.T) {
	storePath := filepath.Join(t.TempDir(), "repute.db")
	r := placeSignedThenStop(t, storePath)
	e, image, poolOf, slow := r.env, r.image, r.poolOf, r.slow
	stop, err := controlplane.StartReputeScheduler(e.ctx, r.cfg.Render())
	if err != nil {
		t.Fatal(err)
	}
	placedBefore := placedTrusted(t)
	created := time.Now()
	e.create(e.pod("after", image.String()))
	if got := poolOf[e.waitBound("after", bindTimeout)]; got != "trusted" {
		t.Errorf("after the restart the signed image landed in pool %q, want trusted from the stored verdict", got)
	}
	waitCounted(t, e, placedBefore)
	if waited := time.Since(created); waited > 2500*time.Millisecond {
		t.Errorf("the first pod after the restart took %s to bind: it waited for the registry instead of the stored verdict", waited)
	}
	if note := e.waitPlacement("after", bindTimeout); !strings.Contains(note, "signature verified +30") {
		t.Errorf("explanation %q does not carry the stored explanation", note)
	}
	stop()
	slow.Store(false)

	st, err := store.Open(storePath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ds, _, err := st.Decisions(store.Page{}, func(d *store.Decision) bool { return d.Namespace == e.ns })
	if err != nil || len(ds) != 2 || ds[0].Pod != "before" || ds[1].Pod != "after" || ds[1].Tier != "trusted" || ds[1].Pool != "trusted" {
		t.Errorf("decisions in the store = %+v (%v), want before and after, both trusted", ds, err)
	}
	if h, _, err := st.History(image.String(), store.Page{}); err != nil || len(h) == 0 || h[0].Verdict.Tier != "trusted" {
		t.Errorf("history of the image = %+v (%v), want its trusted verdict", h, err)
	}
	if ps, err := st.Policies(); err != nil || len(ps) != 1 {
		t.Errorf("policies in the store = %d (%v), want the one in force, once", len(ps), err)
	}
}

// waitCounted waits until a trusted placement more than before is counted. The test sees a
// binding as soon as the apiserver stores it, which can be before the scheduler has its answer
// and hands the decision to the store: stopping in between is the window the next start's
// recovery covers. Once the placement is counted its decision is queued, and Close writes it.
func waitCounted(t *testing.T, e *env, before float64) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(e.ctx, 10*time.Millisecond, bindTimeout, true, func(context.Context) (bool, error) {
		return placedTrusted(t) > before, nil
	}); err != nil {
		t.Fatalf("the placement was never counted: %v", err)
	}
}

// placedTrusted reads this process's count of pods placed trusted (the scheduler runs in it).
func placedTrusted(t *testing.T) float64 {
	t.Helper()
	v, err := testutil.GetCounterMetricValue(metrics.PodsPlaced.WithLabelValues("trusted"))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// What lowered trust before a restart still does after it, even once the image is evaluated
// afresh: runtime behavior is kept in the store and refills the ledger.
func TestBehaviorOutlivesARestart(t *testing.T) {
	e := newEnv(t)
	trusted, untrusted := e.node("trusted", "trusted"), e.node("untrusted", "untrusted")
	falco, err := evidence.NewFalcoEndpoint(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config()
	cfg.Falco = controlplane.FalcoArgs{BindAddress: falco.BindAddress, TokenFile: falco.TokenFile}
	cfg.StorePath = filepath.Join(t.TempDir(), "repute.db")
	stop := e.startFalcoScheduler(cfg, falco)

	e.create(e.pod("api-1", trustedImage))
	if got := e.waitBound("api-1", bindTimeout); got != trusted {
		t.Fatalf("api-1 landed on %s, want %s", got, trusted)
	}
	e.reportContainer("api-1", nil)
	alert := evidence.FalcoAlert(e.ns, "api-1", evidence.ContainerIDOf(trustedImage)[:12], "Terminal shell in container", "Critical")
	if status, resp, err := falco.Post(e.ctx, falco.Token, alert); err != nil || status != http.StatusOK {
		t.Fatalf("posting the alert: %d %+v %v", status, resp, err)
	}
	stop()

	stop = e.startFalcoScheduler(cfg, falco)
	defer stop()
	// The stored verdict answers at once; the fresh evaluation (origin only, no registry)
	// finishes within milliseconds, so a pod a moment later is placed by it.
	for _, name := range []string{"api-2", "api-3"} {
		e.create(e.pod(name, trustedImage))
		if got := e.waitBound(name, bindTimeout); got != untrusted {
			t.Errorf("%s landed on %s after a restart, want %s: the alert was forgotten", name, got, untrusted)
		}
		if note := e.waitPlacement(name, bindTimeout); !strings.Contains(note, "Terminal shell in container") {
			t.Errorf("%s: explanation %q does not name the rule", name, note)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// A store file that is not a store (corrupted, or another file) is reported loudly and left as
// it is; the scheduler places pods from memory, its metrics and the audit API's readiness say
// the store is degraded, and store-backed audit requests say why.
func TestCorruptStoreIsReportedAndSchedulingGoesOn(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	storePath := filepath.Join(dir, "repute.db")
	garbage := bytes.Repeat([]byte("not a bbolt file "), 4096)
	if err := os.WriteFile(storePath, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := controlplane.ServingCertificate(dir)
	if err != nil {
		t.Fatal(err)
	}
	bind := freeLoopbackAddress(t)
	cfg := e.config()
	cfg.StorePath = storePath
	cfg.Audit = controlplane.AuditArgs{BindAddress: bind, TLSCertFile: certFile, TLSKeyFile: keyFile}
	e.t.Cleanup(mustStart(t, e, cfg))
	trustedNode := e.node("trusted", "trusted")
	e.create(e.pod("api", trustedImage))
	if got := e.waitBound("api", bindTimeout); got != trustedNode {
		t.Fatalf("api on %s, want %s: scheduling must go on from memory", got, trustedNode)
	}

	if v := gaugeValue(t, "repute_store_degraded"); v != 1 {
		t.Errorf("repute_store_degraded = %v, want 1", v)
	}
	e.serviceAccount("auditor")
	e.bindClusterRole("cluster-admin", "auditor")
	rc := &rest.Config{Host: "https://" + bind, BearerToken: e.auditToken("auditor"), TLSClientConfig: rest.TLSClientConfig{CAFile: certFile}}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(rc.Host + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), storePath) {
		t.Errorf("/readyz = %d %q, want 503 naming %s", resp.StatusCode, body, storePath)
	}
	_, err = (&audit.Client{HTTP: hc, Server: rc.Host}).Decisions(e.ctx, nil)
	if !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), "reputation store degraded") {
		t.Errorf("decisions with a corrupt store: %v, want 503 saying the store is degraded", err)
	}
	if after, err := os.ReadFile(storePath); err != nil || !bytes.Equal(after, garbage) {
		t.Errorf("the corrupt file was changed (%v): it must be left for forensics", err)
	}
}

// gaugeValue reads a gauge from this process's metrics registry, where the in-process
// scheduler registers Repute's metrics.
func gaugeValue(t *testing.T, name string) float64 {
	t.Helper()
	families, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// signedImageOnSlowRegistry pushes an image signed with the key "ops" to a loopback registry
// whose every answer takes 3 s once slow is set: longer than the verdictWait the tests use, so
// no fresh evaluation can place a pod in time.
// restartScenario is a scheduler with a store that placed a signed image's pod "before" in the
// trusted pool and stopped; its registry is now slow (every answer takes 3 s, longer than
// verdictWait), so a restart with cfg has only what it remembers at first.
type restartScenario struct {
	env    *env
	image  name.Digest
	poolOf map[string]string // node name → pool
	cfg    controlplane.SchedulerConfig
	slow   *atomic.Bool
}

func placeSignedThenStop(t *testing.T, storePath string) *restartScenario {
	t.Helper()
	image, pem, slow := signedImageOnSlowRegistry(t)
	e := newEnv(t)
	poolOf := map[string]string{}
	for _, pool := range []string{"trusted", "unknown", "untrusted"} {
		poolOf[e.node(pool, pool)] = pool
	}
	cfg := signedByOps(e.config(), pem)
	cfg.StorePath, cfg.VerdictWait = storePath, "1s"
	stop, err := controlplane.StartReputeScheduler(e.ctx, cfg.Render())
	if err != nil {
		t.Fatal(err)
	}
	placedBefore := placedTrusted(t)
	e.create(e.pod("before", image.String()))
	if got := poolOf[e.waitBound("before", bindTimeout)]; got != "trusted" {
		t.Fatalf("before the restart the signed image landed in pool %q, want trusted", got)
	}
	e.waitPlacement("before", bindTimeout)
	waitCounted(t, e, placedBefore)
	stop() // the scheduler's context ends: the store flushes and closes
	slow.Store(true)
	t.Cleanup(func() { slow.Store(false) })
	return &restartScenario{env: e, image: image, poolOf: poolOf, cfg: cfg, slow: slow}
}

func signedImageOnSlowRegistry(t *testing.T) (image name.Digest, opsPEM string, slow *atomic.Bool) {
	t.Helper()
	slow = &atomic.Bool{}
	image, opsPEM, _ = signedImageBehind(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if slow.Load() {
				time.Sleep(3 * time.Second)
			}
			h.ServeHTTP(w, r)
		})
	})
	return image, opsPEM, slow
}

// signedImageBehind pushes team/api:v1 to a loopback registry behind wrap and signs it with the
// key "ops".
func signedImageBehind(t *testing.T, wrap func(http.Handler) http.Handler) (image name.Digest, opsPEM string, cosign *oci.Cosign) {
	t.Helper()
	reg, cosign, opsPEM, _ := signingRegistry(t, wrap)
	image, err := oci.PushRandomImage(reg + "/team/api:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := cosign.Sign("ops", image, false); err != nil {
		t.Fatal(err)
	}
	return image, opsPEM, cosign
}

// A scheduler restarted on a large store schedules within seconds: opening it reads the whole
// file and checks it, then warms the cache. 1,000,000 decision records under make soak (about
// half a gigabyte), 100,000 in make test; the time from start to the first pod bound stays
// under 10 s.
func TestWarmStartFromALargeStore(t *testing.T) {
	records := 100000
	if os.Getenv("REPUTE_SOAK") != "" {
		records = 1000000
	}
	storePath := filepath.Join(t.TempDir(), "repute.db")
	st, err := store.Open(storePath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]store.Decision, 1000)
	for written := 0; written < records; written += len(batch) {
		for i := range batch {
			n := written + i
			batch[i] = store.Decision{Namespace: "history", Pod: fmt.Sprintf("pod-%d", n), UID: fmt.Sprintf("uid-%d", n), Node: "node-1",
				Pool: "trusted", Tier: "trusted", Score: 80, Reason: "registry.internal/team/api@sha256:…: score 80 ≥ trusted threshold 70 [origin +30]",
				Images: []string{trustedImage}}
		}
		if err := st.AppendDecisions(context.Background(), batch...); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(storePath)
	if err != nil {
		t.Fatal(err)
	}

	e := newEnv(t)
	trustedNode := e.node("trusted", "trusted")
	cfg := e.config()
	cfg.StorePath = storePath
	started := time.Now()
	t.Cleanup(mustStart(t, e, cfg))
	e.create(e.pod("first", trustedImage))
	if got := e.waitBound("first", 30*time.Second); got != trustedNode {
		t.Fatalf("first pod bound to %s, want %s", got, trustedNode)
	}
	took := time.Since(started)
	t.Logf("store of %d decisions (%.0f MB): first pod bound %s after the scheduler started", records, float64(info.Size())/1e6, took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("the first pod waited %s for a scheduler warm-starting from %d records, want under 10 s", took, records)
	}
}
