// Package reputation is the scheduler-framework glue for Repute: it places each pod on the node
// pool of its reputation tier. The decisions themselves live in the domain package
// github.com/repute-dev/repute/reputation; this package only reads its verdict cache.
package reputation

import (
	"context"
	"fmt"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/dynamic"
	v1helper "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/features"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/apis/config/validation"
	"github.com/repute-dev/repute/pkg/leadership"
	"github.com/repute-dev/repute/pkg/metrics"
	"github.com/repute-dev/repute/pkg/mirror"
	rpolicy "github.com/repute-dev/repute/pkg/policy"
	"github.com/repute-dev/repute/pkg/sources/behavior"
	"github.com/repute-dev/repute/pkg/sources/signature"
	"github.com/repute-dev/repute/pkg/sources/trivy"
	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
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
)

// Reputation places pods on the node pool of their least trusted image's tier, and applies
// node taints as TaintToleration does, except that a pod tolerates its own pool's taint.
type Reputation struct {
	handle    fwk.Handle
	poolKey   string
	pools     map[reputation.Tier]config.PoolSpec
	nodePools *nodePools
	verdicts  *reputation.Cache
	engine    *reputation.Engine
	waiting   *waitingPods
	// pullSecrets learns which pods pull which images, so signature checks of private images
	// use their pull secrets; nil when no signature is checked.
	pullSecrets *signature.PullSecrets
	// store records each placement; nil when no store is configured or it could not open
	// (storeErr says why).
	store    *store.Store
	storeErr error
	// signatures is the signature source, reconfigured when the policy's keys change;
	// signaturePolicy is the signature part of the policy in force.
	signatures      *signature.Source
	signaturePolicy config.SignaturePolicy
	policyMu        sync.Mutex // serializes policy changes
	policyName      string
	// policyFollower follows the ReputationPolicy named policyName; nil without one.
	policyFollower *rpolicy.Follower
	// policyOrigin says where the policy in force came from, for the store; under policyMu.
	policyOrigin policyOrigin
	// elected is closed once this replica schedules; until then it stands by and writes nothing.
	elected <-chan struct{}
	// storeSpec is the store's retention, run by the leader.
	storeSpec config.StoreSpec
	// untrusted are the untrusted pool's restrictions beyond placement.
	untrusted untrustedRules
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
	_ fwk.PostBindPlugin    = &Reputation{}
)

// New validates the (already defaulted) args, builds the engine that fills the verdict cache
// and starts it with the scheduler's context.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
	return newPlugin(ctx, obj, h, nil)
}

// NewWithEngine returns a plugin factory whose plugins read verdicts from the given engine
// instead of building their own; benchmarks and tests use it to control the cache. The engine
// is started with the scheduler's context, like the default one.
func NewWithEngine(engine *reputation.Engine) func(context.Context, runtime.Object, fwk.Handle) (fwk.Plugin, error) {
	return func(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
		return newPlugin(ctx, obj, h, engine)
	}
}

func newPlugin(ctx context.Context, obj runtime.Object, h fwk.Handle, engine *reputation.Engine) (fwk.Plugin, error) {
	args, ok := obj.(*config.ReputationArgs)
	if !ok {
		return nil, fmt.Errorf("want args to be of type ReputationArgs, got %T", obj)
	}
	if errs := validation.ValidateReputationArgs(nil, args); len(errs) > 0 {
		return nil, fmt.Errorf("invalid ReputationArgs: %w", errs.ToAggregate())
	}
	metrics.Register()
	initial, follower, err := initialPolicy(ctx, args, h)
	if err != nil {
		metrics.PolicyReloads.WithLabelValues("invalid").Inc()
		return nil, err
	}
	metrics.PolicyReloads.WithLabelValues("applied").Inc()
	// A caller that brings its own engine (tests, benchmarks) owns it and leads.
	elected := alreadyElected()
	parts := &engineParts{engine: engine}
	if engine == nil {
		elected = leadership.Elected(ctx)
		if parts, err = newEngine(ctx, args, initial, h, elected); err != nil {
			return nil, err
		}
		engine = parts.engine
	}
	pl := &Reputation{
		handle:                         h,
		poolKey:                        args.PoolLabelKey,
		pools:                          map[reputation.Tier]config.PoolSpec{},
		verdicts:                       engine.Cache(),
		engine:                         engine,
		waiting:                        newWaitingPods(),
		pullSecrets:                    parts.pullSecrets,
		signatures:                     parts.signatures,
		store:                          parts.store,
		storeErr:                       parts.storeErr,
		signaturePolicy:                initial.compiled.Spec.Signature,
		policyName:                     args.PolicyName,
		policyOrigin:                   initial.origin,
		policyFollower:                 follower,
		elected:                        elected,
		storeSpec:                      args.Store,
		untrusted:                      newUntrustedRules(args.Untrusted),
		enableTaintComparisonOperators: utilfeature.DefaultFeatureGate.Enabled(features.TaintTolerationComparisonOperators),
	}
	for _, t := range reputation.Tiers {
		pl.pools[t] = *args.Pools.PoolFor(t)
	}
	pl.nodePools = newNodePools(pl.poolKey, pl.pools)
	if _, err := h.SharedInformerFactory().Core().V1().Nodes().Informer().AddEventHandler(pl.nodePools.eventHandler()); err != nil {
		return nil, fmt.Errorf("watching nodes: %w", err)
	}
	pl.verdicts.Subscribe(pl.onVerdict)
	if err := pl.serveAudit(ctx, args.Audit); err != nil {
		return nil, err
	}
	var m *mover
	if args.Replacement.Mode != config.ReplacementNone || args.Replacement.Upward != config.ReplacementNone {
		if h.ClientSet() != nil {
			m = newMover(pl, args.Replacement)
			pl.verdicts.Subscribe(m.onVerdict)
		}
	}
	go pl.lead(ctx, parts, m)
	if follower != nil {
		follower.Standby = pl.standingBy
		follower.Apply = pl.applyPolicy
		follower.Refused = func(int64, field.ErrorList) { metrics.PolicyReloads.WithLabelValues("invalid").Inc() }
		go follower.Run(ctx)
	}
	klog.FromContext(ctx).Info("Reputation plugin ready", "poolLabelKey", pl.poolKey, "policyVersion", engine.Policy().Version(),
		"trustedPool", pl.pools[reputation.TierTrusted].Name, "unknownPool", pl.pools[reputation.TierUnknown].Name,
		"untrustedPool", pl.pools[reputation.TierUntrusted].Name)
	return pl, nil
}

// Name returns the plugin name.
func (pl *Reputation) Name() string { return Name }

// podState is what PreFilter learns about a pod; it is never changed afterwards, so Clone
// returns it as is.
type podState struct {
	placement
	pool config.PoolSpec
	// poolClass is the class of nodes in the pod's pool.
	poolClass poolClass
}

func (s *podState) Clone() fwk.StateData { return s }

// placement is a pod's tier and why: the least trusted of its images decides.
type placement struct {
	tier reputation.Tier
	// score is the lowest image score; verdict is the verdict of the image that decided the tier.
	score   int
	image   string
	verdict *reputation.Verdict
	// missing counts images that have no verdict yet.
	missing int
}

// Reason explains the placement in one line.
func (p placement) Reason() string {
	if p.verdict == nil {
		return fmt.Sprintf("%d image(s) without a verdict", p.missing)
	}
	return fmt.Sprintf("%s: %s", p.image, p.verdict.Reason())
}

// resolve reads the verdict of every image the pod uses. Images without a verdict make the pod
// unknown: only evidence that was assessed can make a pod trusted.
func (pl *Reputation) resolve(pod *v1.Pod) placement { return resolveWith(pod, pl.verdicts.Get) }

// resolveWith places a pod by the verdicts verdictOf gives (the cache's, or a simulation's).
func resolveWith(pod *v1.Pod, verdictOf func(image string) *reputation.Verdict) placement {
	p := placement{tier: reputation.TierTrusted, score: 100}
	forEachImage(pod, func(image string) {
		v := verdictOf(image)
		if v == nil {
			p.missing++
			p.tier = reputation.Worse(p.tier, reputation.TierUnknown)
			return
		}
		if p.verdict == nil || reputation.LessTrusted(v.Tier, p.verdict.Tier) || (v.Tier == p.verdict.Tier && v.Score < p.verdict.Score) {
			p.image, p.verdict = image, v
		}
		p.tier = reputation.Worse(p.tier, v.Tier)
		p.score = min(p.score, v.Score)
	})
	return p
}

// forEachImage visits every image a pod runs or mounts: init, regular and ephemeral
// containers, and image volumes. Any of them can carry code onto the node.
func forEachImage(pod *v1.Pod, visit func(image string)) {
	for i := range pod.Spec.InitContainers {
		visit(pod.Spec.InitContainers[i].Image)
	}
	for i := range pod.Spec.Containers {
		visit(pod.Spec.Containers[i].Image)
	}
	for i := range pod.Spec.EphemeralContainers {
		visit(pod.Spec.EphemeralContainers[i].Image)
	}
	for i := range pod.Spec.Volumes {
		if img := pod.Spec.Volumes[i].Image; img != nil {
			visit(img.Reference)
		}
	}
}

// PreEnqueue holds a pod back until each of its images has a verdict. The engine publishes a
// verdict (a provisional unknown one, at worst) within the configured wait, and the pod is
// activated as soon as the last one arrives.
func (pl *Reputation) PreEnqueue(ctx context.Context, pod *v1.Pod) *fwk.Status {
	if pl.requestMissing(pod) {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonWaitingForVerdict)
	}
	return nil
}

// requestMissing asks the engine for every image of the pod that has no verdict, remembers the
// pod as waiting for them, and reports whether there were any.
func (pl *Reputation) requestMissing(pod *v1.Pod) bool {
	missing := false
	forEachImage(pod, func(image string) {
		if pl.pullSecrets != nil {
			pl.pullSecrets.Note(pod, image)
		}
		if pl.verdicts.Get(image) == nil {
			missing = true
			pl.waiting.add(image, pod)
			pl.engine.Request(image)
		}
	})
	return missing
}

// PreFilter resolves the pod's tier once per cycle, from memory only. A pod can reach it with
// an image that has no verdict yet — an ephemeral container added while it waited, or a retry
// from the backoff queue, which skips PreEnqueue — and then it waits here instead, exactly as it
// would have in PreEnqueue: the verdict (a provisional one at worst, after verdictWait)
// activates it again.
func (pl *Reputation) PreFilter(ctx context.Context, cycleState fwk.CycleState, pod *v1.Pod, _ []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	s := pl.stateFor(pod)
	if s.missing > 0 && pl.requestMissing(pod) {
		return nil, fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonWaitingForVerdict)
	}
	if st := pl.untrusted.limitsStatus(pod, s.tier); st != nil {
		return nil, st
	}
	cycleState.Write(stateKey, s)
	return nil, nil
}

func (pl *Reputation) stateFor(pod *v1.Pod) *podState {
	p := pl.resolve(pod)
	return &podState{placement: p, pool: pl.pools[p.tier], poolClass: classOfTier(p.tier)}
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
	if !pl.inPool(node, s) {
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonNotInPool)
	}
	if taint, untolerated := pl.untoleratedTaint(ctx, node, pod, s.pool.Name); untolerated {
		klog.FromContext(ctx).V(4).Info("node had untolerated taints", "node", klog.KObj(node), "pod", klog.KObj(pod), "untoleratedTaint", taint)
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, ErrReasonUntoleratedTaint)
	}
	if s.tier == reputation.TierUntrusted && pl.untrusted.onNodes() {
		return pl.untrusted.admitsOnNode(pod, nodeInfo)
	}
	return nil
}

func (pl *Reputation) inPool(node *v1.Node, s *podState) bool {
	switch pl.nodePools.classOf(node) {
	case s.poolClass:
		return true
	case unpooled:
		return s.pool.AllowUnpooledNodes
	default:
		return false
	}
}

// untoleratedTaint is TaintToleration's Filter check with one exception: the taint that marks
// the pod's own pool is implicitly tolerated, so workloads need no tolerations in their manifests.
func (pl *Reputation) untoleratedTaint(ctx context.Context, node *v1.Node, pod *v1.Pod, pool string) (*v1.Taint, bool) {
	for i := range node.Spec.Taints {
		taint := &node.Spec.Taints[i]
		if taint.Effect != v1.TaintEffectNoSchedule && taint.Effect != v1.TaintEffectNoExecute {
			continue
		}
		if taint.Key == pl.poolKey && taint.Value == pool {
			continue
		}
		// The logger is looked up only here: most nodes carry no taint but their pool's.
		if !v1helper.TolerationsTolerateTaint(klog.FromContext(ctx), pod.Spec.Tolerations, taint, pl.enableTaintComparisonOperators) {
			return taint, true
		}
	}
	return nil, false
}

// Score ranks nodes inside the pool by how full they are: Pack prefers the fullest node (trusted
// pods share nodes and leave others free), Spread prefers the emptiest (an untrusted or unknown
// pod shares its node with as few others as possible). Fullness is the largest of the CPU,
// memory and pod-count fractions in use, so it is in [0,100] with no normalization pass.
func (pl *Reputation) Score(ctx context.Context, cycleState fwk.CycleState, pod *v1.Pod, nodeInfo fwk.NodeInfo) (int64, *fwk.Status) {
	s := pl.readState(cycleState, pod)
	used := fullness(nodeInfo)
	if s.pool.Placement == config.PlacementPack {
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

// PostBind records on the pod why it went where it did, for the people who ask.
func (pl *Reputation) PostBind(ctx context.Context, cycleState fwk.CycleState, pod *v1.Pod, nodeName string) {
	s := pl.readState(cycleState, pod)
	reason := s.Reason()
	pl.handle.EventRecorder().Eventf(pod, nil, v1.EventTypeNormal, "Placed", "Scheduling",
		"placed in pool %s on %s: tier %s, score %d; %s", s.pool.Name, nodeName, s.tier, s.score, reason)
	metrics.PodsPlaced.WithLabelValues(string(s.tier)).Inc()
	if pl.store != nil {
		pl.store.RecordDecision(decisionOf(pod, nodeName, s.pool.Name, s.placement, reason, pl.engine.Policy().Version()))
	}
}

// SignPod lets pods with the same tier and tolerations share scheduling results when batching.
func (pl *Reputation) SignPod(ctx context.Context, pod *v1.Pod) ([]fwk.SignFragment, *fwk.Status) {
	return []fwk.SignFragment{
		{Key: "repute.dev/Reputation.Tier()", Value: string(pl.resolve(pod).tier)},
		{Key: fwk.TolerationsSignerName, Value: fwk.TolerationsSigner(pod)},
	}, nil
}

// newEngine wires the evidence sources: signatures first (they resolve tags to digests), then
// vulnerability reports, read from the cluster when Trivy Operator's CRDs are served, then
// runtime behavior from pod status and, when configured, the Falco alert endpoint.
// engineParts is what newEngine builds besides the engine that the plugin also uses.
type engineParts struct {
	engine      *reputation.Engine
	pullSecrets *signature.PullSecrets
	signatures  *signature.Source
	store       *store.Store
	// storeErr says why a configured store is missing: it could not be opened.
	storeErr error
	// ledger holds runtime behavior; mirror, when configured, the snapshot standbys follow.
	ledger *reputation.BehaviorLedger
	mirror *mirror.Mirror
}

func newEngine(ctx context.Context, args *config.ReputationArgs, initial startPolicy, h fwk.Handle, elected <-chan struct{}) (*engineParts, error) {
	policy := initial.compiled.Policy
	var sources []reputation.EvidenceSource
	sigSource, err := signature.NewSource(initial.compiled.Spec.Signature, args.Evaluation)
	if err != nil {
		return nil, err
	}
	var pullSecrets *signature.PullSecrets
	if sigSource != nil {
		if client := h.ClientSet(); client != nil {
			pullSecrets = signature.NewPullSecrets(client)
			sigSource.Credentials = pullSecrets
		}
		sources = append(sources, sigSource)
	}
	reports := trivy.NewIndex()
	sources = append(sources, &trivy.Source{Index: reports})
	ledger := reputation.NewBehaviorLedger()
	reverifyAfter := args.Evaluation.ReverifyAfter.Duration
	if reverifyAfter == 0 {
		reverifyAfter = -1 // the engine's "never"
	}
	engine := reputation.NewEngine(reputation.EngineOptions{Policy: policy, Sources: sources, Wait: args.VerdictWait.Duration,
		LocalSources: []reputation.EvidenceSource{&reputation.BehaviorSource{Ledger: ledger}},
		Workers:      int(args.Evaluation.Workers), ReverifyAfter: reverifyAfter,
		RetryAfter: args.Evaluation.RetryAfter.Duration, MaxRetryAfter: args.Evaluation.MaxRetryAfter.Duration,
		OnEvaluated: metrics.Evaluated})
	engine.Cache().Subscribe(metrics.VerdictChanged)
	pods := h.SharedInformerFactory().Core().V1().Pods()
	if cfg := h.KubeConfig(); cfg != nil {
		dyn, err := dynamic.NewForConfig(cfg)
		if err != nil {
			return nil, err
		}
		reportChanged := func(r trivy.Report) {
			engine.Reevaluate(func(_ string, v *reputation.Verdict) bool { return trivy.Matches(r, v) })
		}
		if trivy.Watch(ctx, h.ClientSet().Discovery(), dyn, reports, reportChanged) {
			if err := trivy.WatchPods(pods.Informer(), reports, reportChanged); err != nil {
				return nil, fmt.Errorf("watching pods for vulnerability reports: %w", err)
			}
		}
	}
	// A standby records no behavior: the leader sees the same pods and alerts, and mirrors them.
	recorder := &behavior.Recorder{Ledger: ledger, Standby: func() bool { return !leadership.Leading(elected) },
		Rescore: func(keys []string) {
			engine.Rescore(func(_ string, ev *reputation.Evidence) bool { return behavior.Concerns(ev, keys) })
		}}
	st, storeErr := openStore(ctx, args, policy, engine, ledger, elected)
	var verdictMirror *mirror.Mirror
	if ns := args.Mirror.Namespace; ns != "" && h.ClientSet() != nil {
		verdictMirror, err = followMirror(ctx, h.ClientSet(), ns, engine)
		if err != nil {
			return nil, err
		}
	}
	recorder.Persist = func(e reputation.BehaviorEvent, keys []string) {
		if st != nil {
			st.RecordBehavior(store.BehaviorRecord{Keys: keys, Event: e})
		}
		if verdictMirror != nil {
			verdictMirror.RecordBehavior(e, keys)
		}
	}
	if err := behavior.WatchPods(pods.Informer(), recorder); err != nil {
		return nil, fmt.Errorf("watching pod status: %w", err)
	}
	if f := args.Falco; f.BindAddress != "" {
		lister := pods.Lister()
		getPod := func(namespace, name string) (*v1.Pod, error) { return lister.Pods(namespace).Get(name) }
		if _, err := behavior.Serve(ctx, behavior.ServerOptions{BindAddress: f.BindAddress, TokenFile: f.TokenFile, TLSCertFile: f.TLSCertFile,
			TLSKeyFile: f.TLSKeyFile, ClientCAFile: f.ClientCAFile, MaxBodyBytes: f.MaxBodyBytes}, getPod, recorder); err != nil {
			return nil, err
		}
	}
	return &engineParts{engine: engine, pullSecrets: pullSecrets, signatures: sigSource, store: st, storeErr: storeErr,
		ledger: ledger, mirror: verdictMirror}, nil
}
