package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	configv1 "github.com/repute-dev/repute/pkg/apis/config/v1"
	"github.com/repute-dev/repute/test/controlplane"
)

// TestKubeletCannotJoinAnotherPool is issue 14 item 6: a compromised node's kubelet must not
// label its own Node into the trusted pool. The default pool label lives under
// node-restriction.kubernetes.io/, which the NodeRestriction admission plugin (enabled in the
// harness, as kubeadm and managed clusters enable it) keeps kubelets from setting. The old
// repute.dev/pool key is the control: the same kubelet can set it, so the refusal comes from
// the key's prefix and not from the harness refusing nodes everything.
func TestKubeletCannotJoinAnotherPool(t *testing.T) {
	e := newEnv(t)
	nodeName := e.node("kubelet", "untrusted", func(s *controlplane.NodeSpec) { s.PoolKey = configv1.DefaultPoolLabelKey })
	kubelet := kubeletClient(t, e.ctx, nodeName)

	relabel := func(key string) error {
		patch := []byte(`{"metadata":{"labels":{"` + key + `":"trusted"}}}`)
		_, err := kubelet.CoreV1().Nodes().Patch(e.ctx, nodeName, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		return err
	}
	tests := []struct {
		name      string
		do        func() error
		forbidden bool
		// wantMessage is NodeRestriction's wording, so an RBAC refusal cannot pass for it.
		wantMessage string
	}{
		{"default pool label", func() error { return relabel(configv1.DefaultPoolLabelKey) }, true, "not allowed to modify labels"},
		{"pool taint removed", func() error {
			node, err := kubelet.CoreV1().Nodes().Get(e.ctx, nodeName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			node.Spec.Taints = nil
			_, err = kubelet.CoreV1().Nodes().Update(e.ctx, node, metav1.UpdateOptions{})
			return err
		}, true, "not allowed to modify taints"},
		{"re-registered with the default pool label", func() error {
			node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName + "-again", Labels: map[string]string{configv1.DefaultPoolLabelKey: "trusted"}}}
			_, err := kubeletAs(t, nodeName+"-again").CoreV1().Nodes().Create(e.ctx, node, metav1.CreateOptions{})
			return err
		}, true, "not allowed to set the following labels"},
		// Control: a key outside node-restriction.kubernetes.io/ is the kubelet's to set.
		{"control: repute.dev/pool", func() error { return relabel("repute.dev/pool") }, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if tt.forbidden != apierrors.IsForbidden(err) || (!tt.forbidden && err != nil) {
				t.Fatalf("err = %v, want forbidden=%v", err, tt.forbidden)
			}
			if tt.forbidden && !strings.Contains(err.Error(), tt.wantMessage) {
				t.Errorf("err = %v, want NodeRestriction's %q", err, tt.wantMessage)
			}
		})
	}
	node, err := e.client.CoreV1().Nodes().Get(e.ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := node.Labels[configv1.DefaultPoolLabelKey]; got != "untrusted" {
		t.Errorf("node's pool label = %q after the kubelet's attempts, want untrusted", got)
	}
}

// kubeletClient returns a client that acts as the kubelet of nodeName, after RBAC lets kubelets
// manage Node objects (the Node authorizer, which real clusters use instead, is not enabled in
// the harness; NodeRestriction is what this test is about).
func kubeletClient(t *testing.T, ctx context.Context, nodeName string) kubernetes.Interface {
	t.Helper()
	const role = "repute-test-kubelet"
	if _, err := cluster.Client.RbacV1().ClusterRoles().Get(ctx, role, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "create", "update", "patch"}},
		}}
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:nodes"}},
		}
		if _, err := cluster.Client.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cluster.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: "system:node:" + nodeName, Groups: []string{"system:nodes", "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Resource: "nodes", Verb: "patch"},
	}}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := cluster.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		return err == nil && got.Status.Allowed, nil
	}); err != nil {
		t.Fatalf("RBAC never allowed kubelets to patch nodes: %v", err)
	}
	return kubeletAs(t, nodeName)
}

// kubeletAs impersonates the kubelet of nodeName: user system:node:<name> in system:nodes, the
// identity NodeRestriction recognizes.
func kubeletAs(t *testing.T, nodeName string) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:node:" + nodeName, Groups: []string{"system:nodes", "system:authenticated"}}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client
}
