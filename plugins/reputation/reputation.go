// Package reputation is the scheduler-framework glue for Repute: it places each pod on the node
// pool of its reputation tier. The decisions themselves live in the domain package
// github.com/repute-dev/repute/reputation; this package only reads its verdict cache.
package reputation

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	v1helper "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/features"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/apis/config/validation"
	"github.com/repute-dev/repute/pkg/engine"
	"github.com/repute-dev/repute/pkg/placement"
	reputeruntime "github.com/repute-dev/repute/pkg/runtime"
	"github.com/repute-dev/repute/reputation"
)

const (
	// Name is the plugin's name in the registry and in KubeSchedulerConfiguration.
	Name = "Reputation"

	stateKey = "PreFilter" + Name

	// ErrReasonNotInPool is the per-node reason when a node is outside the pod's tier pool.
	ErrReasonNotInPool = "node(s) not in the pod's reputation pool"
	// ErrReasonUntoleratedTaint is the per-node reason when a node has a taint, other than the
	// pod's own pool taint, that the pod does not tolerate. It matches TaintToleration's reason.
	ErrReasonUntoleratedTaint = "node(s) had untolerated taint(s)"
	// ErrReasonWaitingForVerdict gates a pod whose images have no verdict yet.
	ErrReasonWaitingForVerdict = "waiting for the reputation of the pod's images"
	// ErrReasonRuntimeStarting gates every pod while Repute reads its store, snapshot and policy.
	ErrReasonRuntimeStarting = "waiting for Repute to start"
	// ErrReasonRuntimeFailed gates every pod when Repute could not start; the error follows.
	ErrReasonRuntimeFailed = "Repute could not start"
)

// Reputation places pods on the node pool of their least trusted image's tier, and applies
// node taints as TaintToleration does, except that a pod tolerates its own pool's taint. It is
// one profile's view of the runtime its scheduler shares: verdicts come from there, pools are
// its own.
type Reputation struct {
	handle    fwk.Handle
	runtime   *reputeruntime.Runtime
	profile   *placement.Profile
	poolKey   string
	pools     map[reputation.Tier]config.PoolSpec
	nodePools *nodePools
	verdicts  *reputation.Cache
	// waiting holds pods gated for an image's verdict, by image; starting, pods gated until
	// the runtime is ready.
	waiting  *waitingPods
	starting *waitingPods
	// byTier is each tier's pool, its node class and the taints Filter applies, indexed by
	// the tier's class: built once, so PreFilter looks them up without hashing and Filter
	// allocates nothing.
	byTier [3]tierPool // trusted, unknown, untrusted: reputation.Tiers
	// untrusted are the untrusted pool's restrictions beyond placement; neighbours, what they
	// look at on each node.
	untrusted  untrustedRules
	neighbours neighbours
	// lastResolved is the placement of the pod the scheduling cycle is on (see stateFor).
	lastResolved atomic.Pointer[podState]
	// podSecurity checks pods against their tier's Pod Security Standard.
	podSecurity psapolicy.Evaluator
	// Mirrors TaintToleration, so every taint other than the pool's applies exactly as there.
	enableTaintComparisonOperators bool
}

var (
	_ fwk.PreEnqueuePlugin  = &Reputation{}
	_ fwk.PreFilterPlugin   = &Reputation{}
	_ fwk.FilterPlugin      = &Reputation{}
	_ fwk.ScorePlugin       = &Reputation{}
	_ fwk.EnqueueExtensions = &Reputation{}
	_ fwk.SignPlugin        = &Reputation{}
)

// New asserts and validates its (already defaulted) args, gets its scheduler's runtime, and
// builds this profile's state. It does no I/O and never blocks: the runtime reads what it needs
// in the background, and pods wait in PreEnqueue until it is ready.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
	return NewFactory(reputeruntime.Options{})(ctx, obj, h)
}

// NewWithEngine returns a plugin factory whose plugins read verdicts from the given engine
// instead of building their own; benchmarks and tests use it to control the cache. The engine
// is run with the scheduler's context, like the default one.
func NewWithEngine(eng *engine.Engine) frameworkruntime.PluginFactory {
	return NewFactory(reputeruntime.Options{Engine: eng})
}

// NewFactory returns a plugin factory whose runtime is built with opts.
func NewFactory(opts reputeruntime.Options) frameworkruntime.PluginFactory {
	return func(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
		args, ok := obj.(*config.ReputationArgs)
		if !ok {
			return nil, fmt.Errorf("want args to be of type ReputationArgs, got %T", obj)
		}
		if errs := validation.ValidateReputationArgs(nil, args); len(errs) > 0 {
			return nil, fmt.Errorf("invalid ReputationArgs: %w", errs.ToAggregate())
		}
		if !placement.KubeletCannotSet(args.PoolLabelKey) {
			klog.FromContext(ctx).Info("Warning: kubelets can set the pool label, so a compromised node can label itself into another pool; use a key under node-restriction.kubernetes.io/ (see deploy/README.md, Migrating the pool label)",
				"profile", h.ProfileName(), "poolLabelKey", args.PoolLabelKey)
		}
		rt, err := reputeruntime.For(ctx, h, args, opts)
		if err != nil {
			return nil, fmt.Errorf("profile %q: %w", h.ProfileName(), err)
		}
		pl := &Reputation{
			handle:                         h,
			runtime:                        rt,
			poolKey:                        args.PoolLabelKey,
			verdicts:                       rt.Verdicts(),
			waiting:                        newWaitingPods(),
			starting:                       newWaitingPods(),
			untrusted:                      newUntrustedRules(args.Untrusted),
			enableTaintComparisonOperators: utilfeature.DefaultFeatureGate.Enabled(features.TaintTolerationComparisonOperators),
		}
		pl.profile = placement.NewProfile(h.ProfileName(), args, h.EventRecorder(), func(pods map[string]*v1.Pod) { h.Activate(klog.Background(), pods) })
		pl.pools = pl.profile.Pools
		pl.nodePools = newNodePools(pl.poolKey, pl.pools)
		pl.nodePools.onDelete = pl.neighbours.forget
		if pl.podSecurity, err = psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil); err != nil {
			return nil, fmt.Errorf("pod security checks: %w", err)
		}
		for _, tier := range reputation.Tiers {
			pool := pl.pools[tier]
			level, err := psaapi.ParseLevel(pool.PodSecurity)
			if err != nil {
				return nil, fmt.Errorf("pools.%s.podSecurity: %w", tier, err)
			}
			pl.byTier[classOfTier(tier)] = tierPool{pool: pool, class: classOfTier(tier), taints: &taintFilter{poolKey: pl.poolKey, pool: pool.Name},
				podSecurity: psaapi.LevelVersion{Level: level, Version: psaapi.LatestVersion()}}
		}
		if f := h.SharedInformerFactory(); f != nil {
			if _, err := f.Core().V1().Nodes().Informer().AddEventHandler(pl.nodePools.eventHandler()); err != nil {
				return nil, fmt.Errorf("watching nodes: %w", err)
			}
		}
		if err := rt.AddProfile(pl.profile); err != nil {
			return nil, err
		}
		pl.verdicts.Subscribe(pl.onVerdict)
		rt.WhenReady(pl.activateStarting)
		klog.FromContext(ctx).V(2).Info("Reputation plugin ready", "profile", h.ProfileName(), "poolLabelKey", pl.poolKey,
			"trustedPool", pl.pools[reputation.TierTrusted].Name, "unknownPool", pl.pools[reputation.TierUnknown].Name,
			"untrustedPool", pl.pools[reputation.TierUntrusted].Name)
		return pl, nil
	}
}

// Name returns the plugin name.
func (pl *Reputation) Name() string { return Name }

// podState is what PreFilter learns about a pod; it is never changed afterwards, so Clone
// returns it as is.
type podState struct {
	placement.Placement
	// *tierPool points into the plugin's per-tier table: the state allocated per pod stays small.
	*tierPool
	// pod and generation say what the state was resolved from: this pod object, and the
	// verdict cache at this generation (see stateFor).
	pod        *v1.Pod
	generation uint64
}

// tierPool is what placing a pod of one tier needs: its pool, the class of nodes in it, and
// the taints that apply to it there.
type tierPool struct {
	pool   config.PoolSpec
	class  poolClass
	taints *taintFilter
	// podSecurity is the Pod Security Standard a pod of the tier must meet.
	podSecurity psaapi.LevelVersion
}

// tierPoolOf is a tier's pool; a tier Repute does not know has none, and no node admits it.
func (pl *Reputation) tierPoolOf(t reputation.Tier) *tierPool {
	if c := classOfTier(t); c >= 0 {
		return &pl.byTier[c]
	}
	return &noTierPool
}

// noTierPool is the pool of a tier Repute does not know: no node is in it.
var noTierPool = tierPool{class: noPool, taints: &taintFilter{}, podSecurity: psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}}

func (s *podState) Clone() fwk.StateData { return s }

// resolve reads the verdict of every image the pod uses.
func (pl *Reputation) resolve(pod *v1.Pod) placement.Placement { return pl.runtime.Place(pod) }

// PreEnqueue holds a pod back until each of its images has a verdict. The engine publishes a
// verdict (a provisional unknown one, at worst) within the configured wait, and the pod is
// activated as soon as the last one arrives. Until the runtime has started (the cache warmed
// from the store and the snapshot, the policy in force read), every pod waits for that.
func (pl *Reputation) PreEnqueue(ctx context.Context, pod *v1.Pod) *fwk.Status {
	if st := pl.waitForRuntime(pod); st != nil {
		return st
	}
	if pl.requestMissing(pod) {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonWaitingForVerdict)
	}
	return nil
}

// waitForRuntime gates a pod until the runtime is ready; the runtime activates it then.
func (pl *Reputation) waitForRuntime(pod *v1.Pod) *fwk.Status {
	if pl.runtime.Ready() {
		return nil
	}
	pl.starting.add("", pod)
	// Checked again after noting the pod: the runtime may have become ready (and activated the
	// pods it knew of) in between.
	if pl.runtime.Ready() {
		return nil
	}
	if err := pl.runtime.StartErr(); err != nil {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonRuntimeFailed+": "+err.Error())
	}
	return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonRuntimeStarting)
}

func (pl *Reputation) activateStarting() {
	if pods := pl.starting.take(""); len(pods) > 0 {
		pl.profile.Activate(pods)
	}
}

// requestMissing asks the runtime for every image of the pod that has no verdict, remembers the
// pod as waiting for them, and reports whether there were any.
func (pl *Reputation) requestMissing(pod *v1.Pod) bool {
	if !pl.runtime.Request(pod) {
		return false
	}
	placement.ForEachAssessedImage(pod, func(image string) {
		if pl.verdicts.Get(image) == nil {
			pl.waiting.add(image, pod)
		}
	})
	// A verdict published between the request and the note would have found no waiter.
	if pl.runtime.Place(pod).Missing == 0 {
		return false
	}
	return true
}

// PreFilter resolves the pod's tier once per cycle, from memory only. A pod can reach it with
// an image that has no verdict yet — an ephemeral container added while it waited, or a retry
// from the backoff queue, which skips PreEnqueue — and then it waits here instead, exactly as it
// would have in PreEnqueue: the verdict (a provisional one at worst, after verdictWait)
// activates it again.
func (pl *Reputation) PreFilter(ctx context.Context, cycleState fwk.CycleState, pod *v1.Pod, _ []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	s := pl.stateFor(pod)
	if st := pl.waitForRuntime(pod); st != nil {
		return nil, st
	}
	if s.Missing > 0 && pl.requestMissing(pod) {
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonWaitingForVerdict)
	}
	if st := pl.untrusted.limitsStatus(pod, s.Tier); st != nil {
		return nil, st
	}
	if st := pl.podSecurityStatus(pod, s); st != nil {
		return nil, st
	}
	cycleState.Write(stateKey, s)
	return nil, nil
}

// stateFor resolves the pod's images once per scheduling attempt: SignPod and PreFilter both
// need the tier, and the attempt's second call reuses the first's answer while the pod object
// (immutable once the informer delivered it, so compared by pointer) and the verdict cache are
// unchanged. Any verdict published in between changes the generation and forces a fresh answer.
func (pl *Reputation) stateFor(pod *v1.Pod) *podState {
	generation := pl.verdicts.Generation()
	if last := pl.lastResolved.Load(); last != nil && last.pod == pod && last.generation == generation {
		return last
	}
	s := pl.resolveState(pod)
	s.pod, s.generation = pod, generation
	pl.lastResolved.Store(s)
	return s
}

// resolveState resolves the pod's images afresh, for callers outside the scheduling cycle
// (queueing hints), which must not displace the cycle's pod from lastResolved.
func (pl *Reputation) resolveState(pod *v1.Pod) *podState {
	p := pl.resolve(pod)
	return &podState{Placement: p, tierPool: pl.tierPoolOf(p.Tier)}
}

// podSecurityStatus keeps a pod that asks for more than its tier's Pod Security Standard allows
// (host namespaces, privileged containers, host paths, ...) unschedulable, naming each
// violation: the less trusted the code, the less it may ask of its node. Trusted pods
// (privileged by default) cost nothing here.
func (pl *Reputation) podSecurityStatus(pod *v1.Pod, s *podState) *fwk.Status {
	if s.podSecurity.Level == psaapi.LevelPrivileged {
		return nil
	}
	result := psapolicy.AggregateCheckResults(pl.podSecurity.EvaluatePod(s.podSecurity, &pod.ObjectMeta, &pod.Spec))
	if result.Allowed {
		return nil
	}
	violations := make([]string, len(result.ForbiddenReasons))
	for i, reason := range result.ForbiddenReasons {
		violations[i] = reason
		if d := result.ForbiddenDetails[i]; d != "" {
			violations[i] += " (" + d + ")"
		}
	}
	return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, fmt.Sprintf("%s pods must meet Pod Security %q (pools.%s.podSecurity): %s",
		s.Tier, s.podSecurity.Level, s.Tier, strings.Join(violations, "; ")))
}

// PreFilterExtensions returns nil: adding or removing pods never changes a node's pool.
func (pl *Reputation) PreFilterExtensions() fwk.PreFilterExtensions { return nil }

func (pl *Reputation) readState(cycleState fwk.CycleState, pod *v1.Pod) *podState {
	if c, err := cycleState.Read(stateKey); err == nil {
		if s, ok := c.(*podState); ok {
			return s
		}
	}
	// Missing state (e.g. a caller that skipped PreFilter): recompute, it is cheap and pure.
	return pl.stateFor(pod)
}

// Filter admits a node only if it is in the pod's pool (or unpooled, when the tier allows it),
// and the pod tolerates every NoSchedule/NoExecute taint on it other than its own pool's.
func (pl *Reputation) Filter(ctx context.Context, cycleState fwk.CycleState, pod *v1.Pod, nodeInfo fwk.NodeInfo) *fwk.Status {
	s := pl.readState(cycleState, pod)
	node := nodeInfo.Node()
	record := pl.nodePools.recordOf(node)
	if record == nil { // published within publishDelay; until then, statuses are built per call
		record = &nodeRecord{class: pl.nodePools.classify(node)}
	}
	if !inPool(record.class, s) {
		return record.rejection(&record.notInPool, ErrReasonNotInPool)
	}
	if taint, untolerated := pl.untoleratedTaint(ctx, node, pod, s.taints); untolerated {
		klog.FromContext(ctx).V(4).Info("node had untolerated taints", "node", klog.KObj(node), "pod", klog.KObj(pod), "untoleratedTaint", taint)
		return record.rejection(&record.untoleratedTaint, ErrReasonUntoleratedTaint)
	}
	if s.Tier == reputation.TierUntrusted && pl.untrusted.onNodes() {
		return pl.untrusted.admitsOnNode(pod, pl.neighbours.of(nodeInfo))
	}
	return nil
}

func (pl *Reputation) inPool(node *v1.Node, s *podState) bool {
	return inPool(pl.nodePools.classOf(node), s)
}

func inPool(class poolClass, s *podState) bool {
	switch class {
	case s.class:
		return true
	case unpooled:
		return s.pool.AllowUnpooledNodes
	default:
		return false
	}
}

// untoleratedTaint is TaintToleration's Filter check, through the same helper, with one
// exception: the taint that marks the pod's own pool is implicitly tolerated, so workloads need
// no tolerations in their manifests. The helper copies the taints its filter keeps, so it is
// called only when a node has a taint that counts: most carry no taint but their pool's.
func (pl *Reputation) untoleratedTaint(ctx context.Context, node *v1.Node, pod *v1.Pod, counts *taintFilter) (v1.Taint, bool) {
	for i := range node.Spec.Taints {
		if counts.applies(&node.Spec.Taints[i]) {
			return v1helper.FindMatchingUntoleratedTaint(klog.FromContext(ctx), node.Spec.Taints, pod.Spec.Tolerations, counts.applies, pl.enableTaintComparisonOperators)
		}
	}
	return v1.Taint{}, false
}

// taintFilter tells the taints Filter applies to a pod of one tier: NoSchedule and NoExecute
// taints, as TaintToleration applies them, except the tier's own pool taint. A value with a
// method rather than a closure, so the common check is a direct, inlined call.
type taintFilter struct{ poolKey, pool string }

func (f *taintFilter) applies(t *v1.Taint) bool {
	return (t.Effect == v1.TaintEffectNoSchedule || t.Effect == v1.TaintEffectNoExecute) && (t.Key != f.poolKey || t.Value != f.pool)
}

// Score ranks nodes inside the pool by how full they are: Pack prefers the fullest node (trusted
// pods share nodes and leave others free), Spread prefers the emptiest (an untrusted or unknown
// pod shares its node with as few others as possible). Fullness is the largest of the CPU,
// memory and pod-count fractions in use, so it is in [0,100] with no normalization pass.
// Untrusted pods isolated per namespace always pack: the nodes Filter left them are empty or
// their own namespace's, and spreading would hand every empty node to the first namespace.
func (pl *Reputation) Score(ctx context.Context, cycleState fwk.CycleState, pod *v1.Pod, nodeInfo fwk.NodeInfo) (int64, *fwk.Status) {
	s := pl.readState(cycleState, pod)
	used := fullness(nodeInfo)
	if s.pool.Placement == config.PlacementPack || s.Tier == reputation.TierUntrusted && pl.untrusted.perNamespace {
		return used, nil
	}
	return fwk.MaxNodeScore - used, nil
}

// fullness is the node's most used resource, 0–100.
func fullness(nodeInfo fwk.NodeInfo) int64 {
	alloc, req := nodeInfo.GetAllocatable(), nodeInfo.GetRequested()
	var f int64
	if a := alloc.GetMilliCPU(); a > 0 {
		f = max(f, req.GetMilliCPU()*fwk.MaxNodeScore/a)
	}
	if a := alloc.GetMemory(); a > 0 {
		f = max(f, req.GetMemory()*fwk.MaxNodeScore/a)
	}
	if a := int64(alloc.GetAllowedPodNumber()); a > 0 {
		f = max(f, int64(len(nodeInfo.GetPods()))*fwk.MaxNodeScore/a)
	}
	return min(f, fwk.MaxNodeScore)
}

// ScoreExtensions returns nil: scores are already in [0, MaxNodeScore].
func (pl *Reputation) ScoreExtensions() fwk.ScoreExtensions { return nil }

// SignPod lets pods with the same tier and tolerations share scheduling results when batching.
func (pl *Reputation) SignPod(ctx context.Context, pod *v1.Pod) ([]fwk.SignFragment, *fwk.Status) {
	return []fwk.SignFragment{
		{Key: "repute.dev/Reputation.Tier()", Value: string(pl.stateFor(pod).Tier)},
		{Key: fwk.TolerationsSignerName, Value: fwk.TolerationsSigner(pod)},
	}, nil
}
