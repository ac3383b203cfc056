// Package perf runs Kubernetes' own scheduler_perf on Repute: the same workloads under the
// default profile and under Repute configured as deploy/ configures it, so the two can be
// compared within one campaign. make perf runs the campaign (one test case per process,
// palindromic order); make test runs the smoke workload. docs/performance.md is generated from
// the JSON the runs write (make perf-report).
package perf

import (
	"fmt"
	"os"
	"testing"
	"time"

	_ "k8s.io/component-base/logs/json/register"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	schedperf "k8s.io/kubernetes/test/integration/scheduler_perf"

	"github.com/repute-dev/repute/pkg/runtime"
	"github.com/repute-dev/repute/plugins/reputation"
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
	// A workload that cannot finish fails in minutes, not after scheduler_perf's default 10.
	schedperf.RunBenchmarkPerfScheduling(b, "config/performance-config.yaml", "repute", registry,
		schedperf.WithPodsSchedulingTimeout(3*time.Minute))
}
