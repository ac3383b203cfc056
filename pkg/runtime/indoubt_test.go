package runtime

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/engine"
	"github.com/repute-dev/repute/pkg/placement"
	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

func TestMayHaveLanded(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection cut", errors.New("read tcp 127.0.0.1:1->127.0.0.1:2: connection reset by peer"), true},
		{"deadline", context.DeadlineExceeded, true},
		{"timeout answered", apierrors.NewTimeoutError("etcd", 1), true},
		{"internal error", apierrors.NewInternalError(errors.New("etcdserver: leader changed")), true},
		{"already assigned", apierrors.NewConflict(pods, "p", errors.New("pod p is already assigned to node n")), true},
		{"pod deleted", apierrors.NewNotFound(pods, "p"), false},
		{"forbidden", apierrors.NewForbidden(pods, "p", errors.New("no")), false},
		{"throttled", apierrors.NewTooManyRequests("slow down", 1), false},
		{"invalid", apierrors.NewBadRequest("bad binding"), false},
	} {
		if got := mayHaveLanded(tc.err); got != tc.want {
			t.Errorf("%s: mayHaveLanded = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Every order in which a failed Binding call, its pod's sighting bound, a retry and the pod's
// deletion can arrive leaves exactly the decisions of the bindings that landed: one, of the
// attempt on the node the pod is bound to, or none.
func TestBindingsInDoubtRecordEachLandedBindingOnce(t *testing.T) {
	cut := errors.New("http2: client connection lost")
	refused := apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "p", errors.New("no"))
	type step func(rt *Runtime, pod *v1.Pod)
	fail := func(node string, err error) step {
		return func(rt *Runtime, pod *v1.Pod) {
			rt.NoteBinding(pod)
			rt.BindFailed(pod, node, "trusted", placement.Placement{Tier: reputation.TierTrusted}, err)
		}
	}
	succeed := func(node string) step {
		return func(rt *Runtime, pod *v1.Pod) {
			rt.NoteBinding(pod)
			rt.RecordPlacement(pod, node, "trusted", placement.Placement{Tier: reputation.TierTrusted})
		}
	}
	// seenOn is the pod as the watch shows it bound by a Binding of Repute's: with its tier label.
	seenOn := func(node string) step {
		return func(rt *Runtime, pod *v1.Pod) {
			bound := pod.DeepCopy()
			bound.Spec.NodeName = node
			bound.Labels = map[string]string{placement.TierLabel: string(reputation.TierTrusted)}
			rt.confirmBinding(bound)
		}
	}
	// boundBySomeoneElse is the pod bound to the node Repute tried, without Repute's label.
	boundBySomeoneElse := func(node string) step {
		return func(rt *Runtime, pod *v1.Pod) {
			bound := pod.DeepCopy()
			bound.Spec.NodeName = node
			rt.confirmBinding(bound)
		}
	}
	// retryOutHasSeen: a retry is out when the pod is seen bound; the retry's outcome settles it.
	retryOutThenSeen := func(node string, err error) step {
		return func(rt *Runtime, pod *v1.Pod) {
			rt.NoteBinding(pod)
			seenOn(node)(rt, pod)
			rt.BindFailed(pod, node, "trusted", placement.Placement{Tier: reputation.TierTrusted}, err)
		}
	}
	deleted := func(rt *Runtime, pod *v1.Pod) { rt.inDoubt.settled(pod.UID) }

	for _, tc := range []struct {
		name      string
		steps     []step
		wantNodes []string
	}{
		{"the call was cut, the binding landed", []step{fail("a", cut), seenOn("a")}, []string{"a"}},
		{"the call was refused: nothing landed", []step{fail("a", refused), seenOn("a")}, nil},
		{"cut, not landed, the retry succeeded", []step{fail("a", cut), succeed("b"), seenOn("b")}, []string{"b"}},
		{"cut, not landed, the retry to the same node succeeded and was seen first", []step{fail("a", cut), retryOutThenSeen("a", nil), succeed("a")}, []string{"a"}},
		{"cut and landed; the retry elsewhere got already-assigned", []step{fail("a", cut), fail("b", apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, "p", errors.New("already assigned"))), seenOn("a")}, []string{"a"}},
		{"cut, then the pod was deleted", []step{fail("a", cut), deleted, seenOn("a")}, nil},
		{"seen bound twice", []step{fail("a", cut), seenOn("a"), seenOn("a")}, []string{"a"}},
		{"bound elsewhere by someone else", []step{fail("a", cut), seenOn("z")}, nil},
		{"bound to the same node by someone else", []step{fail("a", cut), boundBySomeoneElse("a")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := store.Open(filepath.Join(t.TempDir(), "repute.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			rt := &Runtime{store: st, engine: engine.New(engine.Options{})}
			pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: types.UID("uid-1")}}
			for _, s := range tc.steps {
				s(rt, pod)
			}
			nodes := decisionNodes(t, st)
			if len(nodes) != len(tc.wantNodes) || len(nodes) == 1 && nodes[0] != tc.wantNodes[0] {
				t.Errorf("decisions on nodes %q, want %q", nodes, tc.wantNodes)
			}
			if rt.inDoubt.any() {
				t.Errorf("%d pods still held in doubt", len(rt.inDoubt.pods))
			}
		})
	}
}

// A pod this replica tried to bind, which the previous leader's Binding bound as it died (the
// retry got "already assigned", elsewhere): recovery at takeover leaves it to this replica, so
// its sighting files a "recovered" decision. Without Repute's tier label, nothing is filed.
func TestABindingThePreviousLeaderLandedIsRecovered(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   []string
	}{
		{"bound by the previous leader", map[string]string{placement.TierLabel: "unknown"}, []string{ActionRecovered}},
		{"bound by someone else", nil, nil},
		{"bound by the previous leader, whose record was written", map[string]string{placement.TierLabel: "unknown"}, []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rt, err := For(ctx, newHandle(), defaultedArgs(t), Options{Engine: engine.New(engine.Options{}), Elected: make(chan struct{})})
			if err != nil {
				t.Fatal(err)
			}
			if err := rt.AddProfile(placementProfile("repute-scheduler")); err != nil {
				t.Fatal(err)
			}
			st, err := store.Open(filepath.Join(t.TempDir(), "repute.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			rt.store = st
			written := tc.want != nil && tc.want[0] == ""
			pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "uid-1"},
				Spec: v1.PodSpec{SchedulerName: "repute-scheduler", Containers: []v1.Container{{Name: "c", Image: "docker.io/library/redis:7"}}}}
			if written {
				if err := st.AppendDecisions(ctx, store.Decision{Time: time.Now(), Namespace: "ns", Pod: "p", UID: "uid-1", Node: "node-a", Tier: reputation.TierUnknown}); err != nil {
					t.Fatal(err)
				}
			}
			rt.NoteBinding(pod)
			rt.BindFailed(pod, "node-b", "unknown", placement.Placement{Tier: reputation.TierUnknown},
				apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, "p", errors.New("pod p is already assigned to node node-a")))
			bound := pod.DeepCopy()
			bound.Spec.NodeName, bound.Labels = "node-a", tc.labels
			rt.confirmBinding(bound)
			if err := st.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			ds, _, err := st.Decisions(store.Page{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var actions []string
			for _, d := range ds {
				actions = append(actions, d.Action)
				if d.Node != "node-a" {
					t.Errorf("decision on %s, want node-a, where the pod is", d.Node)
				}
			}
			if len(actions) != len(tc.want) || len(actions) == 1 && actions[0] != tc.want[0] {
				t.Errorf("decisions %q, want %q", actions, tc.want)
			}
		})
	}
}

// A stop cuts the Binding calls out and ends the watch that would have settled them: the drain
// waits for the calls to return, looks at each pod held in doubt, and records the decision of
// the attempt that bound it, before the store closes.
func TestAStopSettlesTheBindingsItCut(t *testing.T) {
	cut := context.Canceled // what a call gets when the scheduler's context ends
	for _, tc := range []struct {
		name string
		// apiNode is where the apiserver has the pod bound ("" not bound), with Repute's label.
		apiNode   string
		lateCall  bool // the call is still out when the drain starts, and returns 100 ms later
		wantNodes []string
	}{
		{"the cut binding landed", "node-a", false, []string{"node-a"}},
		{"the cut binding did not land", "", false, nil},
		{"a call still out when the stop came, which landed", "node-a", true, []string{"node-a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := store.Open(filepath.Join(t.TempDir(), "repute.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: types.UID("uid-1")}}
			inAPI := pod.DeepCopy()
			if tc.apiNode != "" {
				inAPI.Spec.NodeName = tc.apiNode
				inAPI.Labels = map[string]string{placement.TierLabel: string(reputation.TierTrusted)}
			}
			rt := &Runtime{store: st, engine: engine.New(engine.Options{}), client: fake.NewClientset(inAPI)}
			rt.NoteBinding(pod) // the call goes out before the stop
			returns := func() {
				defer rt.BindDone()
				if tc.lateCall {
					time.Sleep(100 * time.Millisecond)
				}
				rt.BindFailed(pod, "node-a", "trusted", placement.Placement{Tier: reputation.TierTrusted}, cut)
			}
			if tc.lateCall {
				go returns()
			} else {
				returns()
			}
			rt.drainBindingsInDoubt(klog.Background())
			nodes := decisionNodes(t, st)
			if strings.Join(nodes, ",") != strings.Join(tc.wantNodes, ",") {
				t.Errorf("decisions on nodes %q, want %q", nodes, tc.wantNodes)
			}
		})
	}
}

// decisionNodes is the node of every decision the store holds, once what was queued is written.
func decisionNodes(t *testing.T, st *store.Store) []string {
	t.Helper()
	if err := st.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ds, _, err := st.Decisions(store.Page{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []string
	for _, d := range ds {
		nodes = append(nodes, d.Node)
	}
	return nodes
}
