package evidence

import (
	"context"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// StartReadyReporter stands in for the kubelets the embedded control plane lacks, for one
// namespace: every pod bound to a node, and not being deleted, is reported Running and Ready
// (ReportContainerStatus), as a kubelet reports a pod whose container started. PodDisruptionBudgets
// count only Ready pods, so tests of evictions under a budget need this. Evicted pods stay
// Terminating, as they would with a kubelet that never confirms the deletion.
func StartReadyReporter(ctx context.Context, client kubernetes.Interface, ns string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](10*time.Millisecond, time.Second))
	enqueue := func(obj any) {
		if p, ok := obj.(*v1.Pod); ok && p.Spec.NodeName != "" && p.DeletionTimestamp == nil && !isReady(p) {
			queue.Add(p.Name)
		}
	}
	_, _ = factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	factory.Start(ctx.Done())
	done := make(chan struct{})
	const workers = 4
	for range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				name, shutdown := queue.Get()
				if shutdown {
					return
				}
				_, err := ReportContainerStatus(ctx, client, ns, name, nil)
				if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
					queue.AddRateLimited(name)
				} else {
					queue.Forget(name)
				}
				queue.Done(name)
			}
		}()
	}
	return func() {
		cancel()
		queue.ShutDown()
		for range workers {
			<-done
		}
		factory.Shutdown()
	}
}

func isReady(p *v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}
