package policy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
)

// Outcome is what putting a policy in force did.
type Outcome struct {
	// Images were re-scored from memory; TierChanges of them changed tier.
	Images, TierChanges int
	// Reverify says the trusted keys changed, so images are being verified again.
	Reverify bool
}

// Follower keeps the scheduler on one ReputationPolicy: each new generation is compiled and,
// when it passes every check, put in force through Apply; either way the object's status says
// what happened. A generation that fails leaves the previous policy in force.
type Follower struct {
	Name   string
	Client dynamic.Interface
	// Apply puts a compiled policy in force; generation is the object's, for the record.
	Apply func(ctx context.Context, c *Compiled, generation int64) (Outcome, error)
	// Refused is told of each generation that failed (for metrics and logs); may be nil.
	Refused func(generation int64, errs field.ErrorList)
	// Standby, when it reports true, keeps status unwritten and Events unsent: a standby
	// replica puts each generation in force in memory, and the leader reports it.
	Standby func() bool
	// Events, when set, gets an Event about the object for each generation acted on: Normal
	// Applied, or Warning Refused with why, which `kubectl describe` shows.
	Events events.EventRecorder

	mu sync.Mutex
	// handled is the newest generation acted on, of the object with handledUID: an object
	// deleted and created again under the same name starts at generation 1 again.
	handled    int64
	handledUID types.UID
	status     v1alpha1.ReputationPolicyStatus
	// work holds the one object's name when it needs a look: a burst of changes is one look,
	// and a status write that fails is retried through the queue's rate limiter.
	work workqueue.TypedRateLimitingInterface[string]
	once sync.Once
}

func (f *Follower) queue() workqueue.TypedRateLimitingInterface[string] {
	f.once.Do(func() {
		f.work = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "repute_policy"})
	})
	return f.work
}

// Resync has Run look at the object again, e.g. to report its status once this replica leads.
func (f *Follower) Resync() { f.queue().Add(f.Name) }

// Initial reads the policy once, before scheduling starts, so that the first pod is placed
// under it. ok is false when it does not exist or fails its checks (the caller keeps its
// fallback policy and Run reports why in status).
func (f *Follower) Initial(ctx context.Context) (c *Compiled, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	obj, err := f.Client.Resource(v1alpha1.Resource).Get(ctx, f.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading ReputationPolicy %s: %w", f.Name, err)
	}
	c, errs := decode(obj)
	if len(errs) > 0 {
		return nil, false, nil
	}
	gen := obj.GetGeneration()
	f.mu.Lock()
	f.handled, f.handledUID = gen, obj.GetUID()
	f.status = v1alpha1.ReputationPolicyStatus{ObservedGeneration: gen, PolicyVersion: c.Policy.Version()}
	meta.SetStatusCondition(&f.status.Conditions, metav1.Condition{Type: v1alpha1.ConditionApplied, Status: metav1.ConditionTrue,
		Reason: v1alpha1.ReasonApplied, ObservedGeneration: gen, Message: "in force since the scheduler started"})
	f.mu.Unlock()
	return c, true, nil
}

// Fallback records which policy is in force when Initial found none to apply (the caller's), so
// that a refusal in status names it.
func (f *Follower) Fallback(version string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status.PolicyVersion = version
}

// Run follows the object until ctx ends.
func (f *Follower) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithValues("reputationPolicy", f.Name)
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(f.Client, 0, "", func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", f.Name).String()
	})
	informer := factory.ForResource(v1alpha1.Resource).Informer()
	// One object, handled in order.
	queue := f.queue()
	_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { f.Resync() },
		UpdateFunc: func(any, any) { f.Resync() },
	})
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	for {
		name, shutdown := queue.Get()
		if shutdown {
			return
		}
		var err error
		if obj, exists, _ := informer.GetStore().GetByKey(name); exists {
			err = f.handle(ctx, logger, obj.(*unstructured.Unstructured))
		}
		if err != nil && ctx.Err() == nil {
			logger.Error(err, "Updating ReputationPolicy status; retrying", "retries", queue.NumRequeues(name))
			queue.AddRateLimited(name)
		} else {
			queue.Forget(name)
		}
		queue.Done(name)
	}
}

// handle acts on a new generation and reports its status; the error is the status write's.
func (f *Follower) handle(ctx context.Context, logger klog.Logger, obj *unstructured.Unstructured) error {
	gen := obj.GetGeneration()
	f.mu.Lock()
	done := obj.GetUID() == f.handledUID && gen <= f.handled
	f.mu.Unlock()
	if !done {
		f.act(ctx, logger, obj, gen)
	}
	if f.Standby != nil && f.Standby() {
		return nil
	}
	return f.writeStatus(ctx, obj)
}

// act compiles and applies one generation and remembers the status it earned.
func (f *Follower) act(ctx context.Context, logger klog.Logger, obj *unstructured.Unstructured, gen int64) {
	cond := metav1.Condition{Type: v1alpha1.ConditionApplied, ObservedGeneration: gen}
	c, errs := decode(obj)
	var out Outcome
	var err error
	if len(errs) == 0 {
		out, err = f.Apply(ctx, c, gen)
		if err != nil {
			errs = field.ErrorList{field.InternalError(field.NewPath("spec"), err)}
		}
	}
	f.mu.Lock()
	defer func() {
		f.mu.Unlock()
		f.event(obj, cond)
	}()
	if obj.GetUID() != f.handledUID {
		// Another object under the name: what the old one earned says nothing of this one.
		f.status.ObservedGeneration, f.status.Reweighed, f.status.TierChanges, f.status.Conditions = 0, 0, 0, nil
	}
	f.handled, f.handledUID = gen, obj.GetUID()
	if len(errs) > 0 {
		cond.Status, cond.Reason = metav1.ConditionFalse, v1alpha1.ReasonInvalid
		cond.Message = fmt.Sprintf("generation %d not applied, policy %s stays in force: %v", gen, f.status.PolicyVersion, errs.ToAggregate())
		logger.Error(errs.ToAggregate(), "ReputationPolicy refused; the previous policy stays in force", "generation", gen, "policyVersion", f.status.PolicyVersion)
		if f.Refused != nil {
			f.Refused(gen, errs)
		}
	} else {
		cond.Status, cond.Reason = metav1.ConditionTrue, v1alpha1.ReasonApplied
		cond.Message = Describe(out.Images, out.TierChanges, out.Reverify)
		f.status.PolicyVersion = c.Policy.Version()
		f.status.Reweighed, f.status.TierChanges = int32(out.Images), int32(out.TierChanges)
		logger.Info("ReputationPolicy applied", "generation", gen, "policyVersion", c.Policy.Version(),
			"images", out.Images, "tierChanges", out.TierChanges, "reverify", out.Reverify)
	}
	f.status.ObservedGeneration = gen
	meta.SetStatusCondition(&f.status.Conditions, cond)
}

// event reports what a generation earned as an Event about the object, from the leader only.
func (f *Follower) event(obj *unstructured.Unstructured, cond metav1.Condition) {
	if f.Events == nil || f.Standby != nil && f.Standby() {
		return
	}
	eventType, reason := corev1.EventTypeNormal, "Applied"
	if cond.Status != metav1.ConditionTrue {
		eventType, reason = corev1.EventTypeWarning, "Refused"
	}
	note := cond.Message
	if len(note) > maxEventNote {
		note = strings.ToValidUTF8(note[:maxEventNote-len("…")], "") + "…"
	}
	f.Events.Eventf(obj, nil, eventType, reason, "Apply", "%s", note)
}

// maxEventNote is the longest note events.k8s.io/v1 accepts (1 kB).
const maxEventNote = 1024

// writeStatus records the status of the newest generation acted on, unless it is there already.
func (f *Follower) writeStatus(ctx context.Context, obj *unstructured.Unstructured) error {
	f.mu.Lock()
	status, uid := *f.status.DeepCopy(), f.handledUID
	f.mu.Unlock()
	if obj.GetUID() != uid {
		return nil // not the object this status is about; its own event follows
	}
	var current v1alpha1.ReputationPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &current); err == nil &&
		current.Status.ObservedGeneration == status.ObservedGeneration && current.Status.PolicyVersion == status.PolicyVersion &&
		meta.IsStatusConditionPresentAndEqual(current.Status.Conditions, v1alpha1.ConditionApplied, conditionStatus(status)) {
		return nil
	}
	ri := f.Client.Resource(v1alpha1.Resource)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest, err := ri.Get(ctx, f.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if latest.GetUID() != uid {
			return nil // deleted and created again meanwhile: its own event follows
		}
		content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&status)
		if err != nil {
			return err
		}
		latest.Object["status"] = content
		_, err = ri.UpdateStatus(ctx, latest, metav1.UpdateOptions{FieldManager: "repute-scheduler"})
		return err
	})
}

func conditionStatus(s v1alpha1.ReputationPolicyStatus) metav1.ConditionStatus {
	if c := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionApplied); c != nil {
		return c.Status
	}
	return metav1.ConditionUnknown
}

// decode reads an object's spec strictly and compiles it.
func decode(obj *unstructured.Unstructured) (*Compiled, field.ErrorList) {
	var rp v1alpha1.ReputationPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj.Object, &rp, true); err != nil {
		return nil, field.ErrorList{field.Invalid(field.NewPath("spec"), "", err.Error())}
	}
	return Compile(&rp.Spec)
}
