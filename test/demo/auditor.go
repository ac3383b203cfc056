package demo

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/repute-dev/repute/pkg/reputectl"
	"github.com/repute-dev/repute/test/controlplane"
)

// auditor is where the audit API listens and the CA of its certificate.
type auditor struct{ server, ca, dir string }

// auditorView grants a ServiceAccount the ClusterRole repute-auditor exactly as deploy/ ships
// it, then shows what that auditor reads with reputectl: the images, one image explained, its
// history, and the decisions that put pods in the untrusted pool.
func auditorView(ctx context.Context, cp *controlplane.ControlPlane, out io.Writer, a auditor, shopImage string) error {
	fmt.Fprintln(out, "\n• the auditor's view: a ServiceAccount bound to the shipped ClusterRole repute-auditor runs reputectl")
	fmt.Fprintln(out, "  with its kubeconfig against the audit API (TLS; TokenReview + SubjectAccessReview, as kube-rbac-proxy does)")
	role, err := controlplane.ShippedClusterRole("repute-auditor")
	if err != nil {
		return err
	}
	if _, err := cp.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := cp.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, &v1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "auditor"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "demo-auditor"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "auditor", Namespace: namespace}},
	}
	if _, err := cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return err
	}
	kubeconfig := filepath.Join(a.dir, "auditor.kubeconfig")
	if err := cp.ServiceAccountKubeconfig(ctx, namespace, "auditor", kubeconfig); err != nil {
		return err
	}
	flags := []string{"--kubeconfig", kubeconfig, "--audit-server", a.server, "--audit-ca", a.ca}
	for _, args := range [][]string{
		{"images"},
		{"image", shopImage},
		{"history", shopImage},
		{"decisions", "-n", namespace, "--tier", "untrusted"},
	} {
		fmt.Fprintf(out, "\n$ reputectl %s\n", strings.Join(args, " "))
		cmd := reputectl.NewCommand("reputectl", out, out)
		cmd.SetArgs(append(flags, args...))
		if err := cmd.ExecuteContext(ctx); err != nil {
			return fmt.Errorf("reputectl %s: %w", strings.Join(args, " "), err)
		}
	}
	return nil
}
