package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/pkg/auditapi"
	"github.com/repute-dev/repute/pkg/metrics"
	"github.com/repute-dev/repute/pkg/mirror"
	"github.com/repute-dev/repute/pkg/sources/behavior"
	"github.com/repute-dev/repute/pkg/sources/trivy"
	"github.com/repute-dev/repute/reputation"
)

// LeaderLabel marks the replica that leads, so that the Services for Falco alerts and the audit
// API reach it and not a standby. The scheduler sets it on its own pod (named by the POD_NAME and
// POD_NAMESPACE environment variables) when elected, and clears it when it starts.
const LeaderLabel = "repute.dev/leader"

// mirrorSyncTimeout bounds how long a starting replica waits for the snapshot before it starts
// cold; the leader it stands by for keeps scheduling meanwhile.
const mirrorSyncTimeout = 30 * time.Second

// start does, in the background, everything that reads the network or the disk before the first
// pod is placed: the ReputationPolicy in force, the store and the snapshot that warm the cache,
// the vulnerability reports, and the endpoints. Then the runtime is ready, and once this replica
// leads it takes over and starts the leader-only work.
func (rt *Runtime) start(ctx context.Context) {
	logger := klog.FromContext(ctx)
	if !rt.ownsEngine {
		rt.lead(ctx)
		return
	}
	rt.markLeader(ctx, false)
	rt.readInitialPolicy(ctx)
	if rt.mirror != nil && (rt.args.Mirror.HMACKeyFile != "" || rt.args.Mirror.HMACKeySecret != "") {
		key, err := rt.mirrorKey(ctx)
		if err != nil {
			rt.failStart(ctx, err)
			return
		}
		rt.mirror.Key = key
	}
	rt.openStore(ctx)
	var wg sync.WaitGroup
	if rt.mirror != nil {
		wg.Go(func() { rt.followMirror(ctx) })
	}
	wg.Go(func() { rt.watchReports(ctx) })
	wg.Wait()
	if err := rt.serve(ctx); err != nil {
		rt.failStart(ctx, err)
		return
	}
	if rt.policyEvents != nil {
		rt.policyEvents.StartRecordingToSink(ctx.Done())
	}
	if rt.follower != nil {
		go rt.follower.Run(ctx)
	}
	go rt.pruneLedger(ctx)
	if ctx.Err() != nil {
		return
	}
	rt.markReady()
	logger.Info("Repute runtime ready", "policyVersion", rt.Policy().Version(), "verdicts", rt.verdicts.Len())
	rt.lead(ctx)
}

// followMirror reads the verdict snapshot into the cache, and keeps following it while this
// replica stands by. Only the wait for its first listing is bounded.
func (rt *Runtime) followMirror(ctx context.Context) {
	syncCtx, cancel := context.WithTimeout(ctx, mirrorSyncTimeout)
	defer cancel()
	synced := make(chan error, 1)
	go func() { synced <- rt.mirror.Follow(ctx) }()
	select {
	case err := <-synced:
		if err != nil && ctx.Err() == nil {
			klog.FromContext(ctx).Error(err, "The verdict snapshot could not be read: this replica starts cold", "namespace", rt.args.Mirror.Namespace)
		}
	case <-syncCtx.Done():
		klog.FromContext(ctx).Error(syncCtx.Err(), "The verdict snapshot could not be read in time: this replica starts cold and keeps trying", "namespace", rt.args.Mirror.Namespace)
	}
}

// watchReports reads Trivy Operator's reports, when its CRDs are served, and re-evaluates the
// images a changed report is about.
func (rt *Runtime) watchReports(ctx context.Context) {
	if rt.kubeConfig == nil || rt.client == nil || rt.informers == nil {
		return
	}
	dyn, err := dynamic.NewForConfig(rt.kubeConfig)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Vulnerability reports cannot be read; dependency evidence is off")
		return
	}
	changed := func(r trivy.Report) {
		rt.engine.Reevaluate(func(_ string, v *reputation.Verdict) bool { return trivy.Matches(r, v) })
	}
	if trivy.Watch(ctx, rt.client.Discovery(), dyn, rt.reports, changed) {
		if err := trivy.WatchPods(rt.informers.Core().V1().Pods().Informer(), rt.reports, changed); err != nil {
			klog.FromContext(ctx).Error(err, "Watching pods for vulnerability reports")
		}
	}
}

// serve opens the Falco alert endpoint and the audit API, when configured.
func (rt *Runtime) serve(ctx context.Context) error {
	if f := rt.args.Falco; f.BindAddress != "" && rt.informers != nil {
		lister := rt.informers.Core().V1().Pods().Lister()
		getPod := func(namespace, name string) (*v1.Pod, error) { return lister.Pods(namespace).Get(name) }
		metrics.InitFalcoSeries(behavior.AlertReasons, behavior.RefusalReasons)
		if _, err := behavior.Serve(ctx, behavior.ServerOptions{BindAddress: f.BindAddress, TokenFile: f.TokenFile, TLSCertFile: f.TLSCertFile,
			TLSKeyFile: f.TLSKeyFile, ClientCAFile: f.ClientCAFile, MaxBodyBytes: f.MaxBodyBytes,
			Counts:    rt.placedByRepute,
			OnAlert:   func(result, reason string) { metrics.FalcoAlerts.WithLabelValues(result, reason).Inc() },
			OnRefused: func(reason string) { metrics.FalcoRequestsRefused.WithLabelValues(reason).Inc() },
		}, getPod, rt.recorder); err != nil {
			return err
		}
	}
	return rt.serveAudit(ctx)
}

// pruneLedger forgets, every hour and on every replica (a standby's ledger follows the
// leader's), the runtime behavior the policy in force no longer weighs at all, so the ledger's
// memory is what the last weeks brought, not everything since the start.
func (rt *Runtime) pruneLedger(ctx context.Context) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		after := rt.engine.Policy().Behavior.ForgetAfter()
		if after <= 0 {
			return
		}
		if n := rt.ledger.Prune(time.Now().Add(-after)); n > 0 {
			klog.FromContext(ctx).V(2).Info("Forgot runtime behavior no longer weighed", "events", n, "olderThan", after)
		}
	}, pruneEvery)
}

// mirrorKey reads the snapshot's HMAC key from its file, or from the Secret kept for it, which
// is asked for again for up to a minute: the apiserver may be restarting with the scheduler.
func (rt *Runtime) mirrorKey(ctx context.Context) (key []byte, err error) {
	if rt.args.Mirror.HMACKeyFile != "" {
		return mirror.ReadKey(rt.args.Mirror.HMACKeyFile)
	}
	var last error
	err = wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		key, last = mirror.EnsureKey(ctx, rt.client, rt.args.Mirror.Namespace, rt.args.Mirror.HMACKeySecret)
		if errors.Is(last, mirror.ErrShortKey) {
			return false, last
		}
		if last != nil {
			klog.FromContext(ctx).Error(last, "Reading the snapshot's key")
		}
		return last == nil, nil
	})
	if err != nil {
		return nil, fmt.Errorf("the snapshot's HMAC key: %w (last: %v)", err, last)
	}
	return key, nil
}

// serveAudit starts the audit API in the scheduler process: the store is one bbolt file that
// only one process can open for writing, and a sidecar could not read it while the scheduler
// holds it. Current verdicts come from the live cache, simulations from the evidence in
// memory, the rest from the store.
func (rt *Runtime) serveAudit(ctx context.Context) error {
	spec := rt.args.Audit
	if rt.client == nil || (spec.BindAddress == "" && spec.AggregatedBindAddress == "") {
		return nil
	}
	var records audit.Records
	ready := func() error { return nil }
	switch {
	case rt.store != nil:
		records, ready = rt.store, rt.store.Err
	case rt.storeErr != nil:
		storeErr := rt.storeErr
		ready = func() error { return storeErr }
	}
	if spec.CertificateSecret != "" && spec.TLSCertFile == "" {
		namespace, name, _ := strings.Cut(spec.CertificateSecret, "/") // validated
		var err error
		spec.TLSCertFile, spec.TLSKeyFile, err = auditapi.KeepCertificate(ctx, rt.client, auditapi.KeepOptions{
			Namespace: namespace, Name: name, Service: spec.ServiceName, PublishCABundle: spec.AggregatedBindAddress != ""})
		if err != nil {
			return fmt.Errorf("audit APIs' certificate: %w", err)
		}
	}
	if spec.BindAddress != "" {
		authn, authz, err := audit.Delegated(ctx, rt.client)
		if err != nil {
			return err
		}
		srv := &audit.Server{Images: rt.verdicts.Snapshot, Authenticator: authn, Authorizer: authz, Simulate: rt.simulate,
			Records: records, Ready: ready}
		if _, err := audit.Serve(ctx, audit.ServeOptions{BindAddress: spec.BindAddress, TLSCertFile: spec.TLSCertFile, TLSKeyFile: spec.TLSKeyFile}, srv); err != nil {
			return fmt.Errorf("audit API: %w", err)
		}
	}
	if spec.AggregatedBindAddress != "" {
		verdicts := func() (map[string]*reputation.Verdict, error) { return rt.verdicts.Snapshot(), nil }
		go auditapi.Run(ctx, rt.client, auditapi.Options{BindAddress: spec.AggregatedBindAddress,
			CertFile: spec.TLSCertFile, KeyFile: spec.TLSKeyFile, Records: records, StoreReady: ready, Verdicts: verdicts, Simulate: rt.simulate})
	}
	return nil
}

// lead waits until this replica is elected and then takes over, in an order that keeps what the
// previous leader knew: the behavior the snapshot carries goes into the ledger before any image
// is evaluated again, so a re-evaluation cannot forget an alert. The verdicts themselves are
// already in the cache, so the first pods are placed by them while evidence is gathered again.
// Then the leader-only work starts, through RunWhenLeading.
func (rt *Runtime) lead(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-rt.elected:
	}
	rt.takeOver(ctx)
	// An engine brought by the caller runs with the scheduler's context too.
	rt.RunWhenLeading(ctx, rt.engine.Run)
	if rt.mover != nil {
		rt.RunWhenLeading(ctx, rt.mover.Run)
	}
	if rt.store != nil {
		rt.RunWhenLeading(ctx, rt.pruneLoop, rt.recoverDecisions)
	}
	close(rt.tookOver)
	if rt.follower != nil {
		rt.follower.Resync() // its status was left to the previous leader
	}
	rt.markLeader(ctx, true)
}

func (rt *Runtime) takeOver(ctx context.Context) {
	logger := klog.FromContext(ctx)
	if rt.mirror != nil {
		events := rt.mirror.Lead(ctx)
		for _, b := range events {
			rt.ledger.Record(b.Event, b.Keys...)
		}
		logger.Info("Took over the verdict snapshot", "verdicts", rt.verdicts.Len(), "behaviorEvents", len(events))
	}
	if rt.store != nil {
		if n, err := catchUp(rt.store, rt.verdicts); err != nil {
			logger.Error(err, "Recording the verdicts adopted while standing by")
		} else if n > 0 {
			logger.Info("Recorded the verdicts adopted while standing by", "verdicts", n)
		}
		rt.policyMu.Lock()
		recordPolicy(ctx, rt.store, rt.engine.Policy(), rt.policyOrigin)
		rt.policyMu.Unlock()
	}
	if rt.store != nil || rt.mirror != nil {
		// Verdicts learnt from disk or the snapshot stand until their evidence is gathered again.
		rt.engine.Reevaluate(func(string, *reputation.Verdict) bool { return true })
	}
}

// markLeader sets or clears LeaderLabel on this replica's own pod, when it knows its pod.
func (rt *Runtime) markLeader(ctx context.Context, leading bool) {
	name, namespace := os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE")
	if name == "" || namespace == "" || rt.client == nil {
		return
	}
	value := "null"
	if leading {
		value = `"true"`
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, LeaderLabel, value)
	if _, err := rt.client.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "repute-scheduler"}); err != nil {
		klog.FromContext(ctx).Error(err, "Labelling this replica's pod; the Services for alerts and audit may not reach the leader", "pod", klog.KRef(namespace, name), "leading", leading)
	}
}
