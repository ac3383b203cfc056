package reputation

import (
	"context"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/leadership"
	"github.com/repute-dev/repute/pkg/mirror"
	"github.com/repute-dev/repute/reputation"
)

// LeaderLabel marks the replica that leads, so that the Services for Falco alerts and the audit
// API reach it and not a standby. The scheduler sets it on its own pod (named by the POD_NAME and
// POD_NAMESPACE environment variables) when elected, and clears it when it starts.
const LeaderLabel = "repute.dev/leader"

// mirrorSyncTimeout bounds how long a starting replica waits for the snapshot before it stands
// by cold; the leader it stands by for keeps scheduling meanwhile.
const mirrorSyncTimeout = 30 * time.Second

func alreadyElected() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// standingBy reports whether this replica waits for the lease: it gathers no evidence and
// writes nothing, to the cluster or to its store.
func (pl *Reputation) standingBy() bool { return !leadership.Leading(pl.elected) }

// followMirror reads the verdict snapshot into the cache before the plugin is ready, and keeps
// following it while this replica stands by.
func followMirror(ctx context.Context, client kubernetes.Interface, namespace string, engine *reputation.Engine) (*mirror.Mirror, error) {
	maxAge := func() time.Duration { return 10 * engine.Policy().Behavior.HalfLife }
	m := mirror.New(client, namespace, engine.Cache(), maxAge)
	syncCtx, cancel := context.WithTimeout(ctx, mirrorSyncTimeout)
	defer cancel()
	// The watch runs for the plugin's life; only the wait for its first listing is bounded.
	synced := make(chan error, 1)
	go func() { synced <- m.Follow(ctx) }()
	select {
	case err := <-synced:
		if err != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("following the verdict snapshot in %s: %w", namespace, err)
		}
	case <-syncCtx.Done():
		klog.FromContext(ctx).Error(syncCtx.Err(), "The verdict snapshot could not be read in time: this replica starts cold and keeps trying", "namespace", namespace)
	}
	return m, nil
}

// lead waits until this replica is elected and then takes over, in an order that keeps what the
// previous leader knew: the behavior the snapshot carries goes into the ledger before any image
// is evaluated again, so a re-evaluation cannot forget an alert. The verdicts themselves are
// already in the cache, so the first pods are placed by them while evidence is gathered again.
func (pl *Reputation) lead(ctx context.Context, parts *engineParts, m *mover) {
	logger := klog.FromContext(ctx)
	pl.markLeader(ctx, false)
	select {
	case <-ctx.Done():
		return
	case <-pl.elected:
	}
	if parts.mirror != nil {
		events := parts.mirror.Lead(ctx)
		for _, b := range events {
			parts.ledger.Record(b.Event, b.Keys...)
		}
		logger.Info("Took over the verdict snapshot", "verdicts", pl.verdicts.Len(), "behaviorEvents", len(events))
	}
	if pl.store != nil {
		if n, err := catchUp(pl.store, pl.verdicts); err != nil {
			logger.Error(err, "Recording the verdicts adopted while standing by")
		} else if n > 0 {
			logger.Info("Recorded the verdicts adopted while standing by", "verdicts", n)
		}
		pl.policyMu.Lock()
		recordPolicy(ctx, pl.store, pl.engine.Policy(), pl.policyOrigin)
		pl.policyMu.Unlock()
		go pruneLoop(ctx, pl.store, pl.storeSpec, logger.WithValues("store", pl.storeSpec.Path))
	}
	if parts.store != nil || parts.mirror != nil {
		// Verdicts learnt from disk or the snapshot stand until their evidence is gathered again.
		pl.engine.Reevaluate(func(string, *reputation.Verdict) bool { return true })
	}
	go pl.engine.Run(ctx)
	if m != nil {
		go m.run(ctx)
	}
	if pl.policyFollower != nil {
		pl.policyFollower.Resync() // its status was left to the previous leader
	}
	pl.markLeader(ctx, true)
}

// markLeader sets or clears LeaderLabel on this replica's own pod, when it knows its pod.
func (pl *Reputation) markLeader(ctx context.Context, leading bool) {
	name, namespace := os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE")
	client := pl.handle.ClientSet()
	if name == "" || namespace == "" || client == nil {
		return
	}
	value := "null"
	if leading {
		value = `"true"`
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, LeaderLabel, value)
	if _, err := client.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "repute-scheduler"}); err != nil {
		klog.FromContext(ctx).Error(err, "Labelling this replica's pod; the Services for alerts and audit may not reach the leader", "pod", klog.KRef(namespace, name), "leading", leading)
	}
}
