package controlplane

import (
	"context"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubernetes/pkg/controller/deployment"
	"k8s.io/kubernetes/pkg/controller/replicaset"
)

// StartWorkloadControllers runs the real Deployment and ReplicaSet controllers of
// kube-controller-manager in this process, so pods that are evicted are really recreated.
// There is no kubelet: pods stay Pending (or Running, once a test reports it) and evicted ones
// stay Terminating, which the controllers treat as gone.
func StartWorkloadControllers(ctx context.Context, client kubernetes.Interface) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactory(client, 0)
	rs := replicaset.NewReplicaSetController(ctx, factory.Apps().V1().ReplicaSets(), factory.Core().V1().Pods(), client, replicaset.BurstReplicas)
	dc, err := deployment.NewDeploymentController(ctx, factory.Apps().V1().Deployments(), factory.Apps().V1().ReplicaSets(), factory.Core().V1().Pods(), client)
	if err != nil {
		cancel()
		return nil, err
	}
	factory.Start(ctx.Done())
	done := make(chan struct{}, 2)
	go func() { rs.Run(ctx, 2); done <- struct{}{} }()
	go func() { dc.Run(ctx, 2); done <- struct{}{} }()
	return func() {
		cancel()
		<-done
		<-done
		factory.Shutdown()
	}, nil
}
