// Package perf runs Kubernetes' own scheduler_perf on Repute: the same workloads under the
// default profile and under Repute configured as deploy/ configures it, so the two can be
// compared within one campaign. make perf runs the campaign (one test case per process,
// palindromic order); make test runs the smoke workload. docs/performance.md is generated from
// the JSON the runs write (make perf-report).
package perf

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/errgroup"

	_ "k8s.io/component-base/logs/json/register"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	schedperf "k8s.io/kubernetes/test/integration/scheduler_perf"

	"github.com/repute-dev/repute/pkg/runtime"
	"github.com/repute-dev/repute/plugins/reputation"
	"github.com/repute-dev/repute/reputation/store"
	"github.com/repute-dev/repute/test/oci"
)

func TestMain(m *testing.M) {
	if err := schedperf.InitTests(); err != nil {
		fmt.Fprintf(os.Stderr, "%v\n", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// BenchmarkPerfScheduling is scheduler_perf with Repute's plugin in the out-of-tree registry.
// scheduler_perf builds the scheduler with scheduler.New, which runs no leader election: the
// plugin is told so, as the README tells embedders.
func BenchmarkPerfScheduling(b *testing.B) {
	registry := frameworkruntime.Registry{
		reputation.Name: reputation.NewFactory(runtime.Options{Elected: runtime.WithoutElection()}),
	}
	config, selected := "config/performance-config.yaml", ""
	if bench := flag.Lookup("test.bench"); bench != nil {
		selected = bench.Value.String()
	}
	signed, storePath := strings.Contains(selected, "FirstSeen"), filepath.Join(b.TempDir(), "repute.db")
	if signed {
		config = signedFirstSeenImages(b, config, storePath)
	}
	// A workload that cannot finish fails in minutes, not after scheduler_perf's default 10.
	schedperf.RunBenchmarkPerfScheduling(b, config, "repute", registry,
		schedperf.WithPodsSchedulingTimeout(3*time.Minute))
	if signed && strings.Contains(selected, "Repute_") && !strings.Contains(selected, "Default_") {
		// The point of the workload is trust from verified signatures: every pod must have
		// been placed trusted, none by a verdict that timed out.
		if placed := placedByTier(b, storePath); placed["trusted"] != firstSeenImages || len(placed) != 1 {
			b.Errorf("pods placed by tier %v, want all %d trusted by their verified signatures", placed, firstSeenImages)
		}
	}
}

// firstSeenImages is the FirstSeenImages workloads' measurePods: one image per pod.
const firstSeenImages = 1000

// signedFirstSeenImages readies the FirstSeenImages workloads: a registry on loopback holding
// one image per pod (REGISTRY/perf/pause-<pod index>:v1), each signed by the real cosign CLI with a
// key the Repute profile requires for trust. Every pod thus brings an image Repute has never
// seen, which it resolves, fetches the signature of and verifies before placing the pod. It
// returns the configuration with the registry and the generated scheduler configuration filled
// in; the Repute profile records its decisions in a store at storePath, as deploy/ runs it.
func signedFirstSeenImages(b *testing.B, config, storePath string) string {
	bin, err := oci.FindCosign()
	if err != nil {
		b.Fatal(err)
	}
	host, stop, err := oci.StartRegistry()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)
	dir := b.TempDir()
	cosign := &oci.Cosign{Bin: bin, Dir: dir}
	key, err := cosign.GenerateKeyPair("perf")
	if err != nil {
		b.Fatal(err)
	}
	refs := make([]name.Digest, firstSeenImages)
	for i := range refs {
		// One repository each: the registry answers a referrers query by reading every
		// manifest in the repository, which at 2000 would be most of the run's CPU.
		if refs[i], err = oci.PushRandomImage(fmt.Sprintf("%s/perf/pause-%d:v1", host, i)); err != nil {
			b.Fatal(err)
		}
	}
	// Two cosign processes, one per core: signing is most of the setup.
	var signing errgroup.Group
	for half := range 2 {
		signing.Go(func() error { return cosign.SignAll("perf", refs[half*len(refs)/2:(half+1)*len(refs)/2], false) })
	}
	if err := signing.Wait(); err != nil {
		b.Fatal(err)
	}
	keyJSON, _ := json.Marshal(key) // a JSON string is a YAML string
	fill := func(path string, replace ...string) string {
		text, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		out := filepath.Join(dir, filepath.Base(path))
		if err := os.WriteFile(out, []byte(strings.NewReplacer(replace...).Replace(string(text))), 0o600); err != nil {
			b.Fatal(err)
		}
		return out
	}
	signedConfig := fill("config/repute-signed.yaml", "REPUTE_PERF_KEY", string(keyJSON), "REPUTE_PERF_STORE", storePath)
	return fill(config, "REPUTE_PERF_REGISTRY", host, "config/repute-signed.yaml", signedConfig)
}

// placedByTier counts the placement decisions in the run's store by tier. The scheduler
// closes the store as its workload ends; Open waits for that.
func placedByTier(b *testing.B, path string) map[string]int {
	st, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	placed := map[string]int{}
	if _, _, err := st.Decisions(store.Page{}, func(d *store.Decision) bool {
		placed[string(d.Tier)]++
		return false
	}); err != nil {
		b.Fatal(err)
	}
	return placed
}
