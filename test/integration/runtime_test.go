package integration

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	fwk "k8s.io/kube-scheduler/framework"

	reputationplugin "github.com/repute-dev/repute/plugins/reputation"
	"github.com/repute-dev/repute/reputation/store"
	"github.com/repute-dev/repute/test/controlplane"
	"github.com/repute-dev/repute/test/evidence"
	"github.com/repute-dev/repute/test/oci"
)

// countingSignedRegistry serves 5 images signed by the real cosign CLI and counts, per digest,
// the reads of their legacy ".sig" tags: every verification reads its digest's tag exactly once.
func countingSignedRegistry(t *testing.T) (images []string, opsPEM string, verifications func() map[string]int) {
	t.Helper()
	var mu sync.Mutex
	sigReads := map[string]int{}
	reg, cosign, opsPEM, _ := signingRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, ".sig") {
				mu.Lock()
				sigReads[r.URL.Path]++
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	})
	for i := range 5 {
		d, err := oci.PushRandomImage(fmt.Sprintf("%s/shared/app-%d:v1", reg, i))
		if err != nil {
			t.Fatal(err)
		}
		if err := cosign.Sign("ops", d, false); err != nil {
			t.Fatal(err)
		}
		images = append(images, d.String())
	}
	mu.Lock()
	clear(sigReads) // signing itself may read the tags
	mu.Unlock()
	return images, opsPEM, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range sigReads {
			out[k] = v
		}
		return out
	}
}

// assertOneReadEach checks that each of n digests' signature tags was read exactly once.
func assertOneReadEach(t *testing.T, reads map[string]int, n int) {
	t.Helper()
	total := 0
	for _, r := range reads {
		total += r
	}
	if len(reads) != n || total != n {
		t.Errorf("signature tag reads = %v (%d in all), want one for each of the %d digests", reads, total, n)
	}
}

// Two profiles of one scheduler that both enable Reputation share one runtime: both place pods
// by the same verdicts, each digest is verified once for both (counted at the registry), one
// store records both profiles' placements, and one Falco endpoint listens.
func TestTwoProfilesShareOneRuntime(t *testing.T) {
	images, opsPEM, verifications := countingSignedRegistry(t)
	e := newEnv(t)
	trustedNode := e.node("trusted", "trusted", func(s *controlplane.NodeSpec) { s.Pods = 50 })
	cfg := e.config()
	second := e.schedulerName + "-second"
	cfg.MoreProfiles = []string{second}
	cfg = signedByOps(cfg, opsPEM)
	storePath := filepath.Join(t.TempDir(), "repute.db")
	cfg.StorePath = storePath
	falco, err := evidence.NewFalcoEndpoint(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Falco = controlplane.FalcoArgs{BindAddress: falco.BindAddress, TokenFile: falco.TokenFile}
	stop := e.startFalcoScheduler(cfg, falco)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})

	var names []string
	for i := range 20 {
		p := e.pod(fmt.Sprintf("p%02d", i), images[i%len(images)])
		if i%2 == 1 {
			p.Spec.SchedulerName = second
		}
		e.create(p)
		names = append(names, p.Name)
	}
	for _, n := range names {
		if got := e.waitBound(n, 60*time.Second); got != trustedNode {
			t.Fatalf("%s on %s, want the trusted node: both profiles place by the same verdicts", n, got)
		}
	}
	assertOneReadEach(t, verifications(), len(images))
	if code, _, err := falco.Post(e.ctx, "wrong-token", []byte("[]")); err != nil || code != http.StatusUnauthorized {
		t.Errorf("the one Falco endpoint answered %d, %v; want 401 to a wrong token", code, err)
	}

	stop() // the store is one file only one process opens; read it once the scheduler is gone
	stopped = true
	st, err := store.Open(storePath, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ds, _, err := st.Decisions(store.Page{}, func(d *store.Decision) bool { return d.Namespace == e.ns })
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for _, d := range ds {
		recorded[d.Pod] = true
	}
	for _, n := range names {
		if !recorded[n] {
			t.Errorf("the store has no decision for %s; decisions: %d", n, len(ds))
		}
	}
}

// Two Repute schedulers in one process both schedule: one through kube-scheduler's app, one
// built with scheduler.New as embedders do. Each has its own runtime, its own pools and its own
// pods.
func TestTwoSchedulersInOneProcess(t *testing.T) {
	a := newEnv(t)
	a.startScheduler()
	b := newEnv(t)
	stop, err := controlplane.StartEmbeddedReputeScheduler(b.ctx, b.client, b.config().Render())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	for _, e := range []*env{a, b} {
		trusted, untrusted := e.node("trusted", "trusted"), e.node("untrusted", "untrusted")
		e.create(e.pod("api", trustedImage))
		e.create(e.pod("miner", untrustedImage))
		if got := e.waitBound("api", 30*time.Second); got != trusted {
			t.Errorf("%s: api on %s, want %s", e.schedulerName, got, trusted)
		}
		if got := e.waitBound("miner", 30*time.Second); got != untrusted {
			t.Errorf("%s: miner on %s, want %s", e.schedulerName, got, untrusted)
		}
	}
}

// slowDiscoveryProxy serves the apiserver through a TLS proxy that answers discovery, and
// ReputationPolicy reads, only after delay; everything else passes at once.
func slowDiscoveryProxy(t *testing.T, delay time.Duration) (kubeconfig string, delayed *atomic.Int32) {
	t.Helper()
	delayed = &atomic.Int32{}
	target, err := url.Parse(cluster.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	transport, err := rest.TransportFor(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport, proxy.FlushInterval = transport, -1
	slow := func(path string) bool {
		return path == "/api" || path == "/apis" || strings.HasPrefix(path, "/apis/aquasecurity.github.io") ||
			strings.HasPrefix(path, "/apis/repute.dev")
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slow(r.URL.Path) {
			delayed.Add(1)
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	kc := clientcmdapi.NewConfig()
	kc.Clusters["slow"] = &clientcmdapi.Cluster{Server: srv.URL,
		CertificateAuthorityData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})}
	kc.AuthInfos["proxied"] = &clientcmdapi.AuthInfo{} // the proxy brings the credentials
	kc.Contexts["slow"] = &clientcmdapi.Context{Cluster: "slow", AuthInfo: "proxied"}
	kc.CurrentContext = "slow"
	kubeconfig = filepath.Join(t.TempDir(), "slow.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	return kubeconfig, delayed
}

// New does no I/O and never blocks: with the apiserver's discovery (and the ReputationPolicy it
// names) answering only after 3 s, New returns within milliseconds, and pods are placed once the
// runtime has read what it needs in the background.
func TestNewReturnsAtOnceWhileDiscoveryIsSlow(t *testing.T) {
	const delay = 3 * time.Second
	e := newEnv(t)
	trusted := e.node("trusted", "trusted")
	cfg := e.config()
	kubeconfig, delayed := slowDiscoveryProxy(t, delay)
	cfg.Kubeconfig = kubeconfig
	cfg.PolicyName = e.schedulerName // absent: the args' policy stays in force
	var slowest atomic.Int64
	timed := func(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
		start := time.Now()
		p, err := reputationplugin.New(ctx, obj, h)
		slowest.Store(max(slowest.Load(), int64(time.Since(start))))
		return p, err
	}
	stop, err := controlplane.StartReputeSchedulerWith(e.ctx, cfg.Render(), timed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	took := time.Duration(slowest.Load())
	t.Logf("New took %s", took)
	if took == 0 || took > 100*time.Millisecond {
		t.Errorf("New took %s while discovery takes %s; want it to return within milliseconds", took, delay)
	}
	e.create(e.pod("api", trustedImage))
	if got := e.waitBound("api", 30*time.Second); got != trusted {
		t.Errorf("api on %s, want %s", got, trusted)
	}
	if delayed.Load() == 0 {
		t.Error("no discovery or ReputationPolicy request went through the slow proxy: the test proves nothing")
	}
}
