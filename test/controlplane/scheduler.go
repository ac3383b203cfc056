package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"k8s.io/component-base/configz"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	"k8s.io/kubernetes/pkg/scheduler"
	"k8s.io/kubernetes/pkg/scheduler/apis/config/latest"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	"k8s.io/kubernetes/pkg/scheduler/profile"

	_ "github.com/repute-dev/repute/pkg/apis/config/scheme"
	reputeruntime "github.com/repute-dev/repute/pkg/runtime"
	"github.com/repute-dev/repute/plugins/reputation"
)

// StartReputeScheduler runs the Repute scheduler in this process through kube-scheduler's own
// setup path (config file decoding, defaulting, validation), exactly as the binary does, minus
// the signal handling that NewSchedulerCommand installs once per process. The returned stop
// cancels it and waits for it to exit.
func StartReputeScheduler(ctx context.Context, schedulerConfigYAML string) (stop func(), err error) {
	return StartReputeSchedulerWith(ctx, schedulerConfigYAML, reputation.New)
}

// StartReputeSchedulerWith is StartReputeScheduler with another factory for the Reputation
// plugin, e.g. one that times New.
func StartReputeSchedulerWith(ctx context.Context, schedulerConfigYAML string, factory frameworkruntime.PluginFactory) (stop func(), err error) {
	return startReputeScheduler(ctx, schedulerConfigYAML, factory, func(string) []string { return []string{"--secure-port=0"} })
}

// Serving is where an in-process scheduler serves HTTPS (/metrics, /healthz), and the file
// holding its self-signed certificate and that certificate's CA, to verify it with.
type Serving struct{ URL, CAFile string }

// StartReputeSchedulerServing is StartReputeScheduler serving HTTPS on loopback as the binary
// does in a cluster: callers are authenticated and authorized through the apiserver of the
// kubeconfig (TokenReview, SubjectAccessReview).
func StartReputeSchedulerServing(ctx context.Context, schedulerConfigYAML, kubeconfig string) (stop func(), serving Serving, err error) {
	addr, err := FreeLoopbackAddress()
	if err != nil {
		return nil, serving, err
	}
	_, port, _ := strings.Cut(addr, ":")
	stop, err = startReputeScheduler(ctx, schedulerConfigYAML, reputation.New, func(dir string) []string {
		serving = Serving{URL: "https://" + addr, CAFile: filepath.Join(dir, "certs", "kube-scheduler.crt")}
		return []string{"--bind-address=127.0.0.1", "--secure-port=" + port, "--cert-dir=" + filepath.Join(dir, "certs"),
			"--authentication-kubeconfig=" + kubeconfig, "--authorization-kubeconfig=" + kubeconfig}
	})
	return stop, serving, err
}

// startReputeScheduler writes the configuration to a directory of its own and starts the
// scheduler with the flags servingFlags gives for that directory.
func startReputeScheduler(ctx context.Context, schedulerConfigYAML string, factory frameworkruntime.PluginFactory, servingFlags func(dir string) []string) (stop func(), err error) {
	dir, err := os.MkdirTemp("", "repute-scheduler-")
	if err != nil {
		return nil, err
	}
	configFile := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(configFile, []byte(schedulerConfigYAML), 0o600); err != nil {
		return nil, err
	}
	opts := options.NewOptions()
	fs := pflag.NewFlagSet("repute-scheduler", pflag.ContinueOnError)
	for _, f := range opts.Flags.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(append([]string{"--config=" + configFile}, servingFlags(dir)...)); err != nil {
		return nil, err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	cc, sched, err := app.Setup(ctx, opts, app.WithPlugin(reputation.Name, factory))
	if err != nil {
		cancel()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("setting up the Repute scheduler: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = app.Run(ctx, cc, sched)
	}()
	return func() {
		cancel()
		<-done
		// The next in-process scheduler registers its configuration again.
		configz.Delete("componentconfig")
		os.RemoveAll(dir)
	}, nil
}

// StartEmbeddedReputeScheduler builds a Repute scheduler with scheduler.New, as programs that
// embed kube-scheduler do (scheduler_perf among them): no app.Run, so no configz and no leader
// election; the plugin is told it leads. Several can run in one process, beside one started by
// StartReputeScheduler.
func StartEmbeddedReputeScheduler(ctx context.Context, client kubernetes.Interface, schedulerConfigYAML string) (stop func(), err error) {
	dir, err := os.MkdirTemp("", "repute-embedded-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	configFile := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(configFile, []byte(schedulerConfigYAML), 0o600); err != nil {
		return nil, err
	}
	cfg, err := options.LoadConfigFromFile(klog.FromContext(ctx), configFile)
	if err != nil {
		return nil, err
	}
	registry := frameworkruntime.Registry{reputation.Name: reputation.NewFactory(reputeruntime.Options{Elected: reputeruntime.WithoutElection()})}
	return runScheduler(ctx, client, scheduler.WithProfiles(cfg.Profiles...), scheduler.WithFrameworkOutOfTreeRegistry(registry))
}

// StartDefaultScheduler runs a stock kube-scheduler with the default profile (schedulerName
// default-scheduler) in this process: the scheduler every other workload in a cluster uses.
func StartDefaultScheduler(ctx context.Context, client kubernetes.Interface) (stop func(), err error) {
	cfg, err := latest.Default()
	if err != nil {
		return nil, err
	}
	return runScheduler(ctx, client, scheduler.WithProfiles(cfg.Profiles...))
}

// runScheduler builds a scheduler with scheduler.New, starts its informers and runs it.
func runScheduler(ctx context.Context, client kubernetes.Interface, opts ...scheduler.Option) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	informers := scheduler.NewInformerFactory(client, 0, nil)
	sched, err := scheduler.New(ctx, client, informers, nil, profile.NewRecorderFactory(broadcaster), opts...)
	if err != nil {
		cancel()
		return nil, err
	}
	broadcaster.StartRecordingToSink(ctx.Done())
	informers.Start(ctx.Done())
	informers.WaitForCacheSync(ctx.Done())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sched.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
		broadcaster.Shutdown()
		informers.Shutdown()
	}, nil
}
