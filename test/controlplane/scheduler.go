package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"k8s.io/component-base/configz"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	"k8s.io/kubernetes/pkg/scheduler"
	"k8s.io/kubernetes/pkg/scheduler/apis/config/latest"
	"k8s.io/kubernetes/pkg/scheduler/profile"

	_ "github.com/repute-dev/repute/pkg/apis/config/scheme"
	"github.com/repute-dev/repute/plugins/reputation"
)

// StartReputeScheduler runs the Repute scheduler in this process through kube-scheduler's own
// setup path (config file decoding, defaulting, validation), exactly as the binary does, minus
// the signal handling that NewSchedulerCommand installs once per process. The returned stop
// cancels it and waits for it to exit.
func StartReputeScheduler(ctx context.Context, schedulerConfigYAML string) (stop func(), err error) {
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
	if err := fs.Parse([]string{"--config=" + configFile, "--secure-port=0"}); err != nil {
		return nil, err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	cc, sched, err := app.Setup(ctx, opts, app.WithPlugin(reputation.Name, reputation.New))
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

// StartDefaultScheduler runs a stock kube-scheduler with the default profile (schedulerName
// default-scheduler) in this process: the scheduler every other workload in a cluster uses.
func StartDefaultScheduler(ctx context.Context, client kubernetes.Interface) (stop func(), err error) {
	cfg, err := latest.Default()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	informers := scheduler.NewInformerFactory(client, 0, nil)
	sched, err := scheduler.New(ctx, client, informers, nil, profile.NewRecorderFactory(broadcaster),
		scheduler.WithProfiles(cfg.Profiles...))
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
