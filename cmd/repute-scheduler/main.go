// Command repute-scheduler is kube-scheduler with the Repute plugin compiled in. Run it as a
// second scheduler; workloads opt in with spec.schedulerName: repute-scheduler.
package main

import (
	"os"
	"time"

	// The image has no CA bundle of its own: registries' certificates are checked against
	// Mozilla's roots compiled in, unless the node mounts a bundle where Go looks for one.
	_ "golang.org/x/crypto/x509roots/fallback"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	// client-go's metrics, as kube-scheduler registers them, except leader election's:
	// leadership.Install reports those and tells the plugin when this replica leads.
	_ "k8s.io/component-base/metrics/prometheus/clientgo/fifo"
	_ "k8s.io/component-base/metrics/prometheus/restclient"
	_ "k8s.io/component-base/metrics/prometheus/version"
	_ "k8s.io/component-base/metrics/prometheus/workqueue"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	_ "github.com/repute-dev/repute/pkg/apis/config/scheme"
	"github.com/repute-dev/repute/pkg/leadership"
	reputeruntime "github.com/repute-dev/repute/pkg/runtime"
	"github.com/repute-dev/repute/pkg/version"
	"github.com/repute-dev/repute/plugins/reputation"
)

func main() {
	leadership.Install()
	// What Repute cannot start with (an endpoint that cannot listen) stops the binary, loudly.
	factory := reputation.NewFactory(reputeruntime.Options{OnStartFailure: reputeruntime.ExitProcess})
	command := app.NewSchedulerCommand(app.WithPlugin(reputation.Name, factory))
	command.Use = "repute-scheduler"
	version.TakeOverFlag(command)
	code := cli.Run(command)
	// The scheduler has stopped; its store writes what is queued before the process goes.
	reputeruntime.AwaitStores(10 * time.Second)
	os.Exit(code)
}
