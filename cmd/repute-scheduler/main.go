// Command repute-scheduler is kube-scheduler with the Repute plugin compiled in. Run it as a
// second scheduler; workloads opt in with spec.schedulerName: repute-scheduler.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	_ "github.com/repute-dev/repute/pkg/apis/config/scheme"
	"github.com/repute-dev/repute/plugins/reputation"
)

func main() {
	command := app.NewSchedulerCommand(app.WithPlugin(reputation.Name, reputation.New))
	os.Exit(cli.Run(command))
}
