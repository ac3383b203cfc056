package reputation

import (
	"context"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	st "k8s.io/kubernetes/pkg/scheduler/testing"
	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/test/podsecurity"
)

func TestUntrustedNodeRules(t *testing.T) {
	node := poolNode("u1", "untrusted", poolTaint("untrusted"))
	neighbour := func(name, ns string) *v1.Pod {
		return restricted(st.MakePod().Name(name).Namespace(ns).UID(name).Node("u1").Container(untrustedImage).Obj())
	}
	daemon := st.MakePod().Name("agent").Namespace("kube-system").UID("agent").Node("u1").OwnerReference("agent", v1.SchemeGroupVersion.WithKind("DaemonSet")).Obj()
	daemon.OwnerReferences[0].Controller = ptr.To(true)
	mirror := st.MakePod().Name("static").Namespace("kube-system").UID("static").Node("u1").Annotation(v1.MirrorPodAnnotationKey, "x").Obj()
	tests := []struct {
		name       string
		rules      config.UntrustedPoolSpec
		podImage   string
		neighbours []*v1.Pod
		wantReason string // empty: admitted
	}{
		{"no rules: shared nodes", config.UntrustedPoolSpec{}, untrustedImage, []*v1.Pod{neighbour("b1", "team-b")}, ""},
		{"per namespace: a pod of another namespace", config.UntrustedPoolSpec{Isolation: config.UntrustedIsolationPerNamespace}, untrustedImage, []*v1.Pod{neighbour("b1", "team-b")}, ErrReasonOtherNamespace},
		{"per namespace: same namespace", config.UntrustedPoolSpec{Isolation: config.UntrustedIsolationPerNamespace}, untrustedImage, []*v1.Pod{neighbour("a1", "team-a")}, ""},
		{"per namespace: a node shared by ours and another", config.UntrustedPoolSpec{Isolation: config.UntrustedIsolationPerNamespace}, untrustedImage, []*v1.Pod{neighbour("a1", "team-a"), neighbour("b1", "team-b")}, ErrReasonOtherNamespace},
		{"per namespace: DaemonSet and static pods do not count", config.UntrustedPoolSpec{Isolation: config.UntrustedIsolationPerNamespace}, untrustedImage, []*v1.Pod{daemon, mirror}, ""},
		{"at the bound", config.UntrustedPoolSpec{MaxPodsPerNode: 2}, untrustedImage, []*v1.Pod{neighbour("a1", "team-a"), neighbour("a2", "team-a"), daemon}, ErrReasonNodeFull},
		{"under the bound", config.UntrustedPoolSpec{MaxPodsPerNode: 2}, untrustedImage, []*v1.Pod{neighbour("a1", "team-a"), daemon, mirror}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := testArgs()
			args.Untrusted = tt.rules
			if args.Untrusted.Isolation == "" {
				args.Untrusted.Isolation = config.UntrustedIsolationNone // as defaulted
			}
			args.Pools.Untrusted.Name = "untrusted"
			pl := newTestPlugin(t, args, untrustedImage)
			pod := restricted(st.MakePod().Name("new").Namespace("team-a").UID("new").Container(tt.podImage).Obj())
			cs := framework.NewCycleState()
			if _, s := pl.PreFilter(context.Background(), cs, pod, nil); !s.IsSuccess() {
				t.Fatal(s)
			}
			s := pl.Filter(context.Background(), cs, pod, nodeInfo(node, tt.neighbours...))
			switch {
			case tt.wantReason == "" && !s.IsSuccess():
				t.Errorf("Filter = %v, want the node admitted", s)
			case tt.wantReason != "" && (s.Code() != fwk.Unschedulable || !strings.Contains(s.Message(), tt.wantReason)):
				t.Errorf("Filter = %v, want Unschedulable: %s", s, tt.wantReason)
			}
		})
	}
}

// The per-node summary is rebuilt when the node's pods change: a pod arriving from another
// namespace closes the node, and its leaving opens it again, on the same NodeInfo.
func TestUntrustedNodeSummaryFollowsTheNode(t *testing.T) {
	args := testArgs()
	args.Untrusted = config.UntrustedPoolSpec{Isolation: config.UntrustedIsolationPerNamespace, MaxPodsPerNode: 2}
	args.Pools.Untrusted.Name = "untrusted"
	pl := newTestPlugin(t, args, untrustedImage)
	pod := restricted(st.MakePod().Name("new").Namespace("team-a").UID("new").Container(untrustedImage).Obj())
	cs := framework.NewCycleState()
	if _, s := pl.PreFilter(context.Background(), cs, pod, nil); !s.IsSuccess() {
		t.Fatal(s)
	}
	ni := nodeInfo(poolNode("u1", "untrusted", poolTaint("untrusted")))
	stranger := st.MakePod().Name("b1").Namespace("team-b").UID("b1").Node("u1").Obj()
	friend := st.MakePod().Name("a1").Namespace("team-a").UID("a1").Node("u1").Obj()
	friend2 := st.MakePod().Name("a2").Namespace("team-a").UID("a2").Node("u1").Obj()
	steps := []struct {
		name       string
		change     func()
		wantReason string
	}{
		{"empty", func() {}, ""},
		{"a pod of another namespace arrives", func() { ni.AddPod(stranger) }, ErrReasonOtherNamespace},
		{"it leaves", func() { _ = ni.RemovePod(klog.Background(), stranger) }, ""},
		{"one of ours", func() { ni.AddPod(friend) }, ""},
		{"two of ours: full", func() { ni.AddPod(friend2) }, ErrReasonNodeFull},
		{"one leaves", func() { _ = ni.RemovePod(klog.Background(), friend2) }, ""},
	}
	for _, step := range steps {
		step.change()
		for range 2 { // the second call reads the summary the first built
			s := pl.Filter(context.Background(), cs, pod, ni)
			got := ""
			if s != nil {
				got = strings.Join(s.Reasons(), "")
			}
			if got != step.wantReason {
				t.Fatalf("%s: Filter = %v, want %q", step.name, s, step.wantReason)
			}
		}
	}
}

func TestUntrustedPodsMustDeclareLimits(t *testing.T) {
	limits := v1.ResourceList{v1.ResourceCPU: resource.MustParse("100m"), v1.ResourceMemory: resource.MustParse("64Mi")}
	withLimits := func(p *v1.Pod, l v1.ResourceList) *v1.Pod {
		for i := range p.Spec.Containers {
			p.Spec.Containers[i].Resources.Limits = l
		}
		return p
	}
	tests := []struct {
		name        string
		pod         *v1.Pod
		wantMissing string // empty: admitted
	}{
		{"untrusted with limits", withLimits(restricted(st.MakePod().Container(untrustedImage).Obj()), limits), ""},
		{"untrusted without", restricted(st.MakePod().Container(untrustedImage).Obj()), "untrusted.requireLimits"},
		{"untrusted with CPU only", withLimits(restricted(st.MakePod().Container(untrustedImage).Obj()), v1.ResourceList{v1.ResourceCPU: resource.MustParse("1")}), "containers without them"},
		{"trusted without limits is not concerned", st.MakePod().Container(trustedImage).Obj(), ""},
	}
	args := testArgs()
	args.Untrusted.RequireLimits = true
	pl := newTestPlugin(t, args, untrustedImage, trustedImage)
	pl.untrusted = newUntrustedRules(args.Untrusted)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, s := pl.PreFilter(context.Background(), framework.NewCycleState(), tt.pod, nil)
			if tt.wantMissing == "" {
				if !s.IsSuccess() {
					t.Errorf("PreFilter = %v, want success", s)
				}
				return
			}
			if s.Code() != fwk.UnschedulableAndUnresolvable || !strings.Contains(s.Message(), tt.wantMissing) {
				t.Errorf("PreFilter = %v, want UnschedulableAndUnresolvable naming %q", s, tt.wantMissing)
			}
		})
	}
}

// restricted makes a pod meet the Pod Security Standard "restricted", which untrusted pods must
// meet by default.
func restricted(p *v1.Pod) *v1.Pod {
	podsecurity.Restricted(&p.Spec)
	return p
}

// Pods must meet their tier's Pod Security Standard: an untrusted pod asking for the host's
// network, or a privileged container, stays unschedulable and the reason names each violation;
// an unknown pod must meet baseline; trusted pods may ask for anything.
func TestPodSecurityPerTier(t *testing.T) {
	args := testArgs()
	args.Pools.Unknown.PodSecurity, args.Pools.Untrusted.PodSecurity = "baseline", "restricted" // the defaults
	pl := newTestPlugin(t, args, trustedImage, unknownImage, untrustedImage)
	privileged := true
	hostNetwork := func(p *v1.Pod) *v1.Pod { p.Spec.HostNetwork = true; return p }
	privilegedContainer := func(p *v1.Pod) *v1.Pod {
		p.Spec.Containers[0].SecurityContext.Privileged = &privileged
		return p
	}
	tests := []struct {
		name        string
		pod         *v1.Pod
		wantReasons []string // empty: placed
	}{
		{"untrusted, restricted", restricted(st.MakePod().Container(untrustedImage).Obj()), nil},
		{"untrusted, plain", st.MakePod().Container(untrustedImage).Obj(), []string{`Pod Security "restricted"`, "runAsNonRoot != true"}},
		{"untrusted on the host's network", hostNetwork(restricted(st.MakePod().Container(untrustedImage).Obj())), []string{"host namespaces"}},
		{"untrusted and privileged", privilegedContainer(restricted(st.MakePod().Container(untrustedImage).Obj())), []string{"privileged"}},
		{"unknown, plain: baseline allows it", st.MakePod().Container(unknownImage).Obj(), nil},
		{"unknown on the host's network", hostNetwork(st.MakePod().Container(unknownImage).Obj()), []string{`Pod Security "baseline"`, "host namespaces"}},
		{"trusted on the host's network", hostNetwork(st.MakePod().Container(trustedImage).Obj()), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, s := pl.PreFilter(context.Background(), framework.NewCycleState(), tt.pod, nil)
			if len(tt.wantReasons) == 0 {
				if !s.IsSuccess() {
					t.Errorf("PreFilter = %v, want the pod placed", s)
				}
				return
			}
			if s.Code() != fwk.UnschedulableAndUnresolvable {
				t.Fatalf("PreFilter = %v, want UnschedulableAndUnresolvable", s)
			}
			for _, want := range tt.wantReasons {
				if !strings.Contains(s.Message(), want) {
					t.Errorf("reason %q does not say %q", s.Message(), want)
				}
			}
		})
	}
}

// Under PerNamespace an untrusted pod packs onto its own namespace's nodes before it takes an
// empty one, whatever the pool's placement: spreading would give every empty node to the first
// namespace and leave none for the next.
func TestUntrustedPerNamespacePacks(t *testing.T) {
	for _, isolation := range []config.UntrustedIsolation{config.UntrustedIsolationNone, config.UntrustedIsolationPerNamespace} {
		t.Run(string(isolation), func(t *testing.T) {
			args := testArgs()
			args.Untrusted = config.UntrustedPoolSpec{Isolation: isolation}
			args.Pools.Untrusted.Name, args.Pools.Untrusted.Placement = "untrusted", config.PlacementSpread
			pl := newTestPlugin(t, args, untrustedImage)
			pod := restricted(st.MakePod().Name("new").Namespace("team-a").UID("new").Container(untrustedImage).Obj())
			cs := framework.NewCycleState()
			if _, s := pl.PreFilter(context.Background(), cs, pod, nil); !s.IsSuccess() {
				t.Fatal(s)
			}
			empty := nodeInfo(poolNode("u1", "untrusted", poolTaint("untrusted")))
			ours := nodeInfo(poolNode("u2", "untrusted", poolTaint("untrusted")),
				st.MakePod().Name("a1").Namespace("team-a").UID("a1").Node("u2").Req(map[v1.ResourceName]string{"cpu": "1"}).Obj())
			emptyScore, _ := pl.Score(context.Background(), cs, pod, empty)
			oursScore, _ := pl.Score(context.Background(), cs, pod, ours)
			if packs := oursScore > emptyScore; packs != (isolation == config.UntrustedIsolationPerNamespace) {
				t.Errorf("scores: own namespace's node %d, empty node %d; want packing only under PerNamespace", oursScore, emptyScore)
			}
		})
	}
}
