package controlplane

import (
	"context"

	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/scale"
	"k8s.io/kubernetes/pkg/controller/deployment"
	"k8s.io/kubernetes/pkg/controller/disruption"
	"k8s.io/kubernetes/pkg/controller/replicaset"
)

// StartWorkloadControllers runs the real Deployment, ReplicaSet and disruption (PDB)
// controllers of kube-controller-manager in this process, so pods that are evicted are really
// recreated and PodDisruptionBudgets really hold. There is no kubelet: pods stay Pending (or
// Running, once a test reports it) and evicted ones stay Terminating, which the controllers
// treat as gone.
func StartWorkloadControllers(ctx context.Context, cfg *rest.Config) (stop func(), err error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactory(client, 0)
	rs := replicaset.NewReplicaSetController(ctx, factory.Apps().V1().ReplicaSets(), factory.Core().V1().Pods(), client, replicaset.BurstReplicas)
	dc, err := deployment.NewDeploymentController(ctx, factory.Apps().V1().Deployments(), factory.Apps().V1().ReplicaSets(), factory.Core().V1().Pods(), client)
	if err != nil {
		cancel()
		return nil, err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(client.Discovery()))
	scales, err := scale.NewForConfig(rest.CopyConfig(cfg), mapper, dynamic.LegacyAPIPathResolverFunc, scale.NewDiscoveryScaleKindResolver(client.Discovery()))
	if err != nil {
		cancel()
		return nil, err
	}
	pdb := disruption.NewDisruptionController(ctx, factory.Core().V1().Pods(), factory.Policy().V1().PodDisruptionBudgets(),
		factory.Core().V1().ReplicationControllers(), factory.Apps().V1().ReplicaSets(), factory.Apps().V1().Deployments(),
		factory.Apps().V1().StatefulSets(), client, mapper, scales, client.Discovery())
	factory.Start(ctx.Done())
	done := make(chan struct{}, 3)
	go func() { rs.Run(ctx, 2); done <- struct{}{} }()
	go func() { dc.Run(ctx, 2); done <- struct{}{} }()
	go func() { pdb.Run(ctx, 1); done <- struct{}{} }()
	return func() {
		cancel()
		for range 3 {
			<-done
		}
		factory.Shutdown()
	}, nil
}
