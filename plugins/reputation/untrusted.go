package reputation

import (
	"fmt"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/reputation"
)

// Reasons an untrusted pod is kept off a node, or kept waiting, beyond its pool.
const (
	ErrReasonOtherNamespace = "node runs pods of another namespace (untrusted.isolation: PerNamespace)"
	ErrReasonNodeFull       = "node holds its maximum of untrusted pods (untrusted.maxPodsPerNode)"
)

// untrustedRules are the untrusted pool's restrictions, when any is on.
type untrustedRules struct {
	perNamespace   bool
	maxPodsPerNode int
	requireLimits  bool
}

func newUntrustedRules(spec config.UntrustedPoolSpec) untrustedRules {
	return untrustedRules{perNamespace: spec.Isolation == config.UntrustedIsolationPerNamespace,
		maxPodsPerNode: int(spec.MaxPodsPerNode), requireLimits: spec.RequireLimits}
}

// onNodes says whether Filter has to look at a node's pods for an untrusted pod.
func (r untrustedRules) onNodes() bool { return r.perNamespace || r.maxPodsPerNode > 0 }

// admitsOnNode checks the node's summary against the rules. It runs only for untrusted pods
// with a rule on, so other pods' Filter stays a pool lookup. Unschedulable (not unresolvable):
// the node may free up, and pods leaving a node requeue the pod.
func (r untrustedRules) admitsOnNode(pod *v1.Pod, node *nodeSummary) *fwk.Status {
	if r.perNamespace && (node.mixed || node.pods > 0 && node.namespace != pod.Namespace) {
		return node.otherNamespace
	}
	if r.maxPodsPerNode > 0 && node.pods >= r.maxPodsPerNode {
		return node.full
	}
	return nil
}

// nodeSummary is what the untrusted pool's rules look at on a node, DaemonSet and static pods
// aside: how many pods it runs and the namespace they share (mixed when there are several). It
// carries the node's two rejections, for the reason nodeRecord does.
type nodeSummary struct {
	generation           int64
	pods                 int
	namespace            string
	mixed                bool
	otherNamespace, full *fwk.Status
}

// neighbours keeps one summary per node, rebuilt only when the node's NodeInfo generation
// changes (a pod came, went or changed there). Filter then costs a lookup, not a walk over
// every pod of the node with allocations for each. It reads the scheduler's snapshot, not an
// informer: pods assumed but not yet bound count, so two namespaces never race onto a node.
type neighbours struct{ byNode sync.Map } // node name → *nodeSummary

func (n *neighbours) of(nodeInfo fwk.NodeInfo) *nodeSummary {
	name, generation := nodeInfo.Node().Name, nodeInfo.GetGeneration()
	if v, ok := n.byNode.Load(name); ok {
		if s := v.(*nodeSummary); s.generation == generation {
			return s
		}
	}
	s := summarize(nodeInfo)
	n.byNode.Store(name, s)
	return s
}

func (n *neighbours) forget(node string) { n.byNode.Delete(node) }

func summarize(nodeInfo fwk.NodeInfo) *nodeSummary {
	s := &nodeSummary{generation: nodeInfo.GetGeneration(),
		otherNamespace: fwk.NewStatus(fwk.Unschedulable, ErrReasonOtherNamespace),
		full:           fwk.NewStatus(fwk.Unschedulable, ErrReasonNodeFull)}
	for _, pi := range nodeInfo.GetPods() {
		p := pi.GetPod()
		if isNodeInfrastructure(p) {
			continue
		}
		if s.pods == 0 {
			s.namespace = p.Namespace
		} else if p.Namespace != s.namespace {
			s.mixed = true
		}
		s.pods++
	}
	return s
}

// isNodeInfrastructure tells DaemonSet and static (mirror) pods: they run on every node of a
// pool whatever its tenants, so they count neither as a neighbour nor towards a bound.
func isNodeInfrastructure(p *v1.Pod) bool {
	if _, mirror := p.Annotations[v1.MirrorPodAnnotationKey]; mirror {
		return true
	}
	c := metav1.GetControllerOf(p)
	return c != nil && c.Kind == "DaemonSet"
}

// missingLimits names the containers (init containers included) that lack a CPU or memory limit.
func missingLimits(pod *v1.Pod) []string {
	var names []string
	check := func(cs []v1.Container) {
		for i := range cs {
			l := cs[i].Resources.Limits
			if _, cpu := l[v1.ResourceCPU]; !cpu {
				names = append(names, cs[i].Name)
			} else if _, mem := l[v1.ResourceMemory]; !mem {
				names = append(names, cs[i].Name)
			}
		}
	}
	check(pod.Spec.InitContainers)
	check(pod.Spec.Containers)
	return names
}

// limitsStatus keeps an untrusted pod without limits out, saying which containers lack them.
func (r untrustedRules) limitsStatus(pod *v1.Pod, tier reputation.Tier) *fwk.Status {
	if !r.requireLimits || tier != reputation.TierUntrusted {
		return nil
	}
	if missing := missingLimits(pod); len(missing) > 0 {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, fmt.Sprintf(
			"untrusted pods must declare CPU and memory limits (untrusted.requireLimits); containers without them: %s", strings.Join(missing, ", ")))
	}
	return nil
}

// isSchedulableAfterPodLeft requeues an untrusted pod, held by a node rule, when a pod leaves
// a node: that node may now take it.
func (pl *Reputation) isSchedulableAfterPodLeft(logger klog.Logger, pod *v1.Pod, _, _ interface{}) (fwk.QueueingHint, error) {
	if !pl.untrusted.onNodes() || pl.resolveState(pod).Tier != reputation.TierUntrusted {
		return fwk.QueueSkip, nil
	}
	logger.V(5).Info("a pod left a node; the untrusted pod may fit there now", "pod", klog.KObj(pod))
	return fwk.Queue, nil
}
