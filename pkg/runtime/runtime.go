// Package runtime owns everything a Repute scheduler runs once, however many of its profiles
// enable the Reputation plugin: the evidence sources and the engine, the verdict cache, the
// store, the verdict mirror, the Falco and audit endpoints, the policy follower and the mover.
// The plugin's New only asks for it (For) and registers its profile; it does no I/O. Everything
// that reads the network or the disk happens in Start's background work, and everything only the
// elected replica may do runs behind one gate, RunWhenLeading.
//
// There is one runtime per scheduler: profiles of one kube-scheduler share its informer factory,
// which is the runtime's key, so two schedulers built in one process (tests, scheduler_perf)
// each get their own.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/engine"
	"github.com/repute-dev/repute/pkg/leadership"
	"github.com/repute-dev/repute/pkg/metrics"
	"github.com/repute-dev/repute/pkg/mirror"
	"github.com/repute-dev/repute/pkg/mover"
	"github.com/repute-dev/repute/pkg/placement"
	rpolicy "github.com/repute-dev/repute/pkg/policy"
	"github.com/repute-dev/repute/pkg/sources/behavior"
	"github.com/repute-dev/repute/pkg/sources/signature"
	"github.com/repute-dev/repute/pkg/sources/trivy"
	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

// Handle is what the runtime needs of the scheduler: the framework handle satisfies it.
type Handle interface {
	ClientSet() kubernetes.Interface
	KubeConfig() *rest.Config
	SharedInformerFactory() informers.SharedInformerFactory
}

// Options change how a runtime is built; the zero value is the product's.
type Options struct {
	// Engine, when set, is used instead of one built from the args. Its owner (a benchmark, a
	// test) fills its cache; the runtime neither runs nor re-evaluates it.
	Engine *engine.Engine
	// Elected, when set, replaces kube-scheduler's leader election: the runtime leads once it
	// is closed. With Engine set and Elected nil, the runtime leads at once.
	Elected <-chan struct{}
	// OnStartFailure is told when the runtime cannot start (an endpoint that cannot listen, a
	// certificate that cannot be read). Without it, pods of Repute's profiles wait, and say why;
	// the scheduler binary exits instead (ExitProcess), as it did when New failed.
	OnStartFailure func(error)
}

// ExitProcess is an OnStartFailure that stops the process with the error, so that a Pod's
// restarts and logs say what is wrong.
func ExitProcess(err error) {
	klog.ErrorS(err, "Repute could not start")
	klog.FlushAndExit(klog.ExitFlushTimeout, 1)
}

// Runtime is the process-wide part of Repute for one scheduler.
type Runtime struct {
	args       *config.ReputationArgs
	client     kubernetes.Interface
	kubeConfig *rest.Config
	informers  informers.SharedInformerFactory
	ownsEngine bool

	engine      *engine.Engine
	verdicts    *reputation.Cache
	signatures  *signature.Source
	pullSecrets *signature.PullSecrets
	reports     *trivy.Index
	ledger      *reputation.BehaviorLedger
	recorder    *behavior.Recorder
	mirror      *mirror.Mirror
	follower    *rpolicy.Follower
	// policyEvents sends the follower's Events about the ReputationPolicy.
	policyEvents events.EventBroadcaster
	mover        *mover.Mover

	// store is set by Start before the runtime is ready, and never changed after; storeErr
	// says why a configured store is missing.
	store    *store.Store
	storeErr error

	policyMu sync.Mutex // serializes policy changes
	// signaturePolicy is the signature part of the policy in force; policyOrigin says where the
	// policy came from, for the store. Both under policyMu.
	signaturePolicy config.SignaturePolicy
	policyOrigin    policyOrigin

	profilesMu sync.RWMutex
	profiles   map[string]*placement.Profile

	// bindingsDuringRecovery, while recoverDecisions runs, collects the pods this replica binds.
	bindingsDuringRecovery atomic.Pointer[sync.Map]
	// inDoubt holds placements whose Binding failed but may have landed (BindFailed).
	inDoubt bindingsInDoubt
	// bindsInFlight counts the Binding calls out (NoteBinding to BindDone), for the drain at stop.
	bindsInFlight atomic.Int64

	// isReady is set once start has warmed the cache and opened the endpoints (an atomic flag:
	// the scheduling path reads it for every pod); startErr says why it never will be.
	isReady        atomic.Bool
	startErr       error
	onStartFailure func(error)
	readyMu        sync.Mutex
	onReady        []func()
	// elected is closed when this replica schedules; tookOver once it has taken over from the
	// previous leader, which is when leader-only work starts.
	elected  <-chan struct{}
	tookOver chan struct{}
}

var runtimes = struct {
	sync.Mutex
	byInformers map[informers.SharedInformerFactory]*Runtime
}{byInformers: map[informers.SharedInformerFactory]*Runtime{}}

// For returns the runtime of the scheduler h belongs to, building it (and starting its
// background work with ctx) for the first profile that asks. Later profiles share it; their
// args must agree on everything but their own pools. It does no I/O and never blocks.
func For(ctx context.Context, h Handle, args *config.ReputationArgs, opts Options) (*Runtime, error) {
	key := h.SharedInformerFactory()
	runtimes.Lock()
	defer runtimes.Unlock()
	if rt := runtimes.byInformers[key]; rt != nil && key != nil {
		if err := rt.compatible(args); err != nil {
			return nil, err
		}
		return rt, nil
	}
	rt, err := build(ctx, h, args, opts)
	if err != nil {
		return nil, err
	}
	if key != nil {
		runtimes.byInformers[key] = rt
		go func() {
			<-ctx.Done()
			runtimes.Lock()
			defer runtimes.Unlock()
			if runtimes.byInformers[key] == rt {
				delete(runtimes.byInformers, key)
			}
		}()
	}
	if !rt.ownsEngine {
		// Nothing to read: the engine's owner fills its cache.
		rt.markReady()
	}
	go rt.start(ctx)
	return rt, nil
}

// processWide is the part of the args one runtime serves for every profile: all but the pools.
func processWide(args *config.ReputationArgs) *config.ReputationArgs {
	c := args.DeepCopy()
	c.PoolLabelKey, c.Pools, c.Untrusted = "", config.TierPools{}, config.UntrustedPoolSpec{}
	return c
}

// compatible checks that another profile's args ask for the same runtime.
func (rt *Runtime) compatible(args *config.ReputationArgs) error {
	if !reflect.DeepEqual(processWide(rt.args), processWide(args)) {
		return errors.New("profiles that enable Reputation in one scheduler share its engine, store and endpoints: " +
			"their args may differ only in poolLabelKey, pools and untrusted")
	}
	return nil
}

// build makes every part from the args, in memory: nothing here reads the network or the disk.
func build(ctx context.Context, h Handle, args *config.ReputationArgs, opts Options) (*Runtime, error) {
	metrics.Register()
	p, err := reputation.NewPolicy(config.Policy(&args.Policy))
	if err != nil {
		metrics.PolicyReloads.WithLabelValues("invalid").Inc()
		return nil, err
	}
	rt := &Runtime{
		args: args.DeepCopy(), client: h.ClientSet(), kubeConfig: h.KubeConfig(), informers: h.SharedInformerFactory(),
		profiles: map[string]*placement.Profile{}, tookOver: make(chan struct{}),
		signaturePolicy: args.Policy.Signature,
		policyOrigin:    policyOrigin{source: "plugin args", spec: (&rpolicy.Compiled{Spec: args.Policy, Policy: p}).Versioned()},
		reports:         trivy.NewIndex(),
		ledger:          reputation.NewBehaviorLedger(),
	}
	rt.elected, rt.onStartFailure = opts.Elected, opts.OnStartFailure
	if opts.Engine != nil {
		rt.engine = opts.Engine
		if rt.elected == nil {
			rt.elected = closed()
		}
	} else {
		rt.ownsEngine = true
		if rt.engine, err = rt.buildEngine(p); err != nil {
			return nil, err
		}
		if rt.elected == nil {
			rt.elected = leadership.Elected(ctx)
		}
	}
	rt.verdicts = rt.engine.Cache()
	rt.verdicts.Subscribe(metrics.VerdictChanged)

	// A standby records no behavior: the leader sees the same pods and alerts, and mirrors them.
	rt.recorder = &behavior.Recorder{Ledger: rt.ledger, Standby: func() bool { return !rt.Leading() },
		Rescore: func(keys []string) { rt.engine.RescoreKeys(keys) },
		Persist: rt.persistBehavior}
	if rt.client != nil && rt.informers != nil {
		// Pod status counts only from pods Repute placed: another scheduler's pods are no
		// evidence about the images Repute vouches for, and are anyone's to make crash.
		if err := behavior.WatchPods(rt.informers.Core().V1().Pods().Informer(), rt.recorder, rt.placedByRepute); err != nil {
			return nil, fmt.Errorf("watching pod status: %w", err)
		}
	}
	if ns := args.Mirror.Namespace; ns != "" && rt.client != nil {
		maxAge := func() time.Duration { return 10 * rt.engine.Policy().Behavior.HalfLife }
		rt.mirror = mirror.New(rt.client, ns, rt.verdicts, maxAge)
		rt.mirror.Admit = rt.warm
	}
	if args.PolicyName != "" && rt.kubeConfig != nil {
		client, err := dynamic.NewForConfig(rt.kubeConfig)
		if err != nil {
			return nil, err
		}
		rt.follower = &rpolicy.Follower{Name: args.PolicyName, Client: client, Standby: func() bool { return !rt.Leading() },
			Apply: rt.applyPolicy, Refused: func(int64, field.ErrorList) {
				metrics.PolicyReloads.WithLabelValues("invalid").Inc()
				metrics.PolicyRefused.Set(1)
			}}
		if rt.client != nil {
			rt.policyEvents = events.NewBroadcaster(&events.EventSinkImpl{Interface: rt.client.EventsV1()})
			rt.follower.Events = rt.policyEvents.NewRecorder(clientgoscheme.Scheme, "repute-scheduler")
		}
	}
	if rt.informers != nil {
		if err := rt.watchBindingsInDoubt(); err != nil {
			return nil, fmt.Errorf("watching pods for bindings in doubt: %w", err)
		}
	}
	r := args.Replacement
	if (r.Mode != config.ReplacementNone || r.Upward != config.ReplacementNone) && rt.client != nil && rt.informers != nil {
		rt.mover = mover.New(mover.Options{Spec: r, Client: rt.client,
			Pods: rt.informers.Core().V1().Pods().Lister(), Nodes: rt.informers.Core().V1().Nodes().Lister(),
			Place: rt.Place, RequestMissing: rt.RequestMissing, Policy: rt.engine.Policy, Profile: rt.Profile,
			Record: rt.recordAction, Leading: rt.Leading})
		rt.verdicts.Subscribe(rt.mover.OnVerdict)
		// A running pod whose images change (kubectl set image, an ephemeral container) is
		// looked at again at once, not at the next resync.
		if _, err := rt.informers.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			UpdateFunc: func(oldObj, newObj any) {
				old, okOld := oldObj.(*v1.Pod)
				pod, okNew := newObj.(*v1.Pod)
				if okOld && okNew && pod.Spec.NodeName != "" && !placement.SameImages(old, pod) && rt.Leading() {
					rt.mover.Enqueue(pod)
				}
			},
		}); err != nil {
			return nil, fmt.Errorf("watching pods for image changes: %w", err)
		}
	}
	return rt, nil
}

// buildEngine wires the evidence sources: signatures first (they resolve tags to digests), then
// vulnerability reports, then runtime behavior from memory.
func (rt *Runtime) buildEngine(p *reputation.Policy) (*engine.Engine, error) {
	args := rt.args
	var sources []reputation.EvidenceSource
	sigSource, err := signature.NewSource(args.Policy.Signature, args.Evaluation)
	if err != nil {
		return nil, err
	}
	rt.signatures = sigSource
	if rt.client != nil {
		rt.pullSecrets = signature.NewPullSecrets(rt.client)
		sigSource.Credentials = rt.pullSecrets
	}
	sources = append(sources, sigSource, &trivy.Source{Index: rt.reports})
	inUse, err := rt.imagesInUse()
	if err != nil {
		return nil, err
	}
	return engine.New(engine.Options{Policy: p, Sources: sources, Wait: args.VerdictWait.Duration, InUse: inUse,
		LocalSources: []reputation.EvidenceSource{&reputation.BehaviorSource{Ledger: rt.ledger}},
		Workers:      int(args.Evaluation.Workers), ReverifyAfter: args.Evaluation.ReverifyAfter.Duration, RescoreEvery: engine.DefaultRescoreEvery,
		MaxStaleness: args.Evaluation.MaxStaleness.Duration, TagTTL: args.Evaluation.TagTTL.Duration,
		RetryAfter: args.Evaluation.RetryAfter.Duration, MaxRetryAfter: args.Evaluation.MaxRetryAfter.Duration,
		OnEvaluated: metrics.Evaluated, OnForgotten: rt.forgotten,
		OnQueueDepth: func(n int) { metrics.EvaluationQueueDepth.Set(float64(n)) },
		OnQueueWait:  func(d time.Duration) { metrics.EvaluationQueueWait.Observe(d.Seconds()) }}), nil
}

// placedByRepute says whether a pod is scheduled by one of Repute's profiles. Only such pods'
// behavior (pod status, Falco alerts) counts: another scheduler's pods are no evidence about
// the images Repute vouches for, and are anyone's to make crash or alert.
func (rt *Runtime) placedByRepute(pod *v1.Pod) bool { return rt.Profile(pod.Spec.SchedulerName) != nil }

// forgotten drops an image no pod uses any more from what would bring it back: the snapshot
// standbys follow and the store's current verdicts, which warm the next start; and the pull
// secrets noted for it. Its history stays until retention prunes it, and its runtime behavior
// stays in the ledger: a forgotten image that comes back must not come back clean.
func (rt *Runtime) forgotten(image string, v *reputation.Verdict) {
	metrics.VerdictForgotten(v)
	if rt.mirror != nil {
		rt.mirror.Forget(image)
	}
	if rt.store != nil {
		rt.store.ForgetVerdict(image)
	}
	if rt.pullSecrets != nil {
		rt.pullSecrets.Forget(image)
	}
}

// podsByImage indexes pods by every image whose verdict counts for them.
const podsByImage = "repute.dev/image"

// imagesInUse indexes the scheduler's pods by image, for the engine to forget images no pod
// uses; nil without informers (every image is kept).
func (rt *Runtime) imagesInUse() (func(image string) bool, error) {
	if rt.informers == nil {
		return nil, nil
	}
	informer := rt.informers.Core().V1().Pods().Informer()
	err := informer.AddIndexers(cache.Indexers{podsByImage: func(obj any) ([]string, error) {
		pod, ok := obj.(*v1.Pod)
		if !ok {
			return nil, nil
		}
		var images []string
		placement.ForEachAssessedImage(pod, func(image string) { images = append(images, image) })
		return images, nil
	}})
	if err != nil {
		return nil, fmt.Errorf("indexing pods by image: %w", err)
	}
	indexer := informer.GetIndexer()
	return func(image string) bool {
		if !informer.HasSynced() {
			return true // not every pod is known yet
		}
		keys, err := indexer.IndexKeys(podsByImage, image)
		return err != nil || len(keys) > 0 // when in doubt, keep it
	}, nil
}

// WithoutElection is Options.Elected for a scheduler that runs no leader election: one built
// with scheduler.New rather than kube-scheduler's app, which decides alone and leads at once.
func WithoutElection() <-chan struct{} { return closed() }

func closed() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// Verdicts is the verdict cache every profile places pods by.
func (rt *Runtime) Verdicts() *reputation.Cache { return rt.verdicts }

// Policy is the policy in force.
func (rt *Runtime) Policy() *reputation.Policy { return rt.engine.Policy() }

// Place is a pod's placement by the verdicts in force.
func (rt *Runtime) Place(pod *v1.Pod) placement.Placement {
	return placement.Resolve(pod, rt.verdicts.Get)
}

// Request asks for the verdicts of a pod's images that have none, noting which pods pull them
// (for their pull secrets), and reports whether any was missing. Before the runtime is ready
// nothing is asked: the engine's wait for a first verdict must not start while the cache is
// still being warmed.
func (rt *Runtime) Request(pod *v1.Pod) (missing bool) { return len(rt.RequestMissing(pod)) > 0 }

// RequestMissing is Request, returning the images that have no verdict.
func (rt *Runtime) RequestMissing(pod *v1.Pod) (missing []string) {
	ready := rt.Ready()
	noted := false
	placement.ForEachAssessedImage(pod, func(image string) {
		if rt.pullSecrets != nil {
			rt.pullSecrets.Note(pod, image)
		}
		if rt.verdicts.Get(image) == nil {
			missing = append(missing, image)
			if ready {
				if !noted {
					// Before the evaluation: the pod's namespace's reports count for it.
					rt.reports.ObserveSpec(pod)
					noted = true
				}
				rt.engine.RequestFor(image, pod.Namespace)
			}
		}
	})
	return missing
}

// AddProfile registers a profile's pools, so the mover and simulations know its pods.
func (rt *Runtime) AddProfile(p *placement.Profile) error {
	rt.profilesMu.Lock()
	defer rt.profilesMu.Unlock()
	if _, dup := rt.profiles[p.Name]; dup {
		return fmt.Errorf("profile %q enables Reputation twice", p.Name)
	}
	rt.profiles[p.Name] = p
	return nil
}

// Profile is the Repute profile of a schedulerName, or nil.
func (rt *Runtime) Profile(schedulerName string) *placement.Profile {
	rt.profilesMu.RLock()
	defer rt.profilesMu.RUnlock()
	return rt.profiles[schedulerName]
}

// Ready reports whether the runtime has started: the cache is warmed from the store and the
// snapshot, the policy in force is read, and the endpoints listen.
func (rt *Runtime) Ready() bool { return rt.isReady.Load() }

// StartErr says why the runtime could not start, or nil.
func (rt *Runtime) StartErr() error {
	rt.readyMu.Lock()
	defer rt.readyMu.Unlock()
	return rt.startErr
}

// WhenReady calls f once the runtime is ready: at once if it is.
func (rt *Runtime) WhenReady(f func()) {
	rt.readyMu.Lock()
	if !rt.Ready() {
		rt.onReady = append(rt.onReady, f)
		rt.readyMu.Unlock()
		return
	}
	rt.readyMu.Unlock()
	f()
}

func (rt *Runtime) markReady() {
	rt.readyMu.Lock()
	rt.isReady.Store(true)
	callbacks := rt.onReady
	rt.onReady = nil
	rt.readyMu.Unlock()
	for _, f := range callbacks {
		f()
	}
}

func (rt *Runtime) failStart(ctx context.Context, err error) {
	rt.readyMu.Lock()
	rt.startErr = err
	rt.readyMu.Unlock()
	if rt.onStartFailure != nil {
		rt.onStartFailure(err)
		return
	}
	klog.FromContext(ctx).Error(err, "Repute could not start: pods of its profiles wait until the scheduler is restarted with this fixed")
}

// Leading reports whether this replica is the elected one and has started: only it gathers
// evidence, evicts, and writes to the cluster or its store. Before the runtime is ready nothing
// is written, even by the leader, so that what start is still reading cannot race a write.
func (rt *Runtime) Leading() bool { return rt.Ready() && leadership.Leading(rt.elected) }

// RunWhenLeading runs each function in its own goroutine once this replica leads and has taken
// over from the previous leader; each must return when ctx ends. This is the one gate all
// leader-only work passes.
func (rt *Runtime) RunWhenLeading(ctx context.Context, runnables ...func(context.Context)) {
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-rt.tookOver:
		}
		for _, run := range runnables {
			go run(ctx)
		}
	}()
}
