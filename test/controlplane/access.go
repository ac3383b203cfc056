package controlplane

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/deploy"
)

// FreeLoopbackAddress returns a 127.0.0.1 host:port that was free a moment ago.
func FreeLoopbackAddress() (string, error) {
	u, err := freeLoopbackURL()
	if err != nil {
		return "", err
	}
	return u.Host, nil
}

// ServingCertificate writes a certificate for 127.0.0.1, localhost and dnsNames into dir. The certificate
// file holds the CA that signed it too, so it doubles as the client's CA bundle.
func ServingCertificate(dir string, dnsNames ...string) (certFile, keyFile string, err error) {
	cert, key, err := certutil.GenerateSelfSignedCertKey("localhost", []net.IP{net.ParseIP("127.0.0.1")}, dnsNames)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "serving.crt"), filepath.Join(dir, "serving.key")
	if err := os.WriteFile(certFile, cert, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, key, 0o600)
}

// ServiceAccountKubeconfig writes a kubeconfig that authenticates as a service account, with a
// token from the TokenRequest API (as kubectl create token gets one).
func (cp *ControlPlane) ServiceAccountKubeconfig(ctx context.Context, namespace, name, path string) error {
	token, err := cp.ServiceAccountToken(ctx, namespace, name)
	if err != nil {
		return err
	}
	cfg := rest.AnonymousClientConfig(cp.Config)
	cfg.BearerToken = token
	return WriteKubeconfig(cfg, path)
}

// ServiceAccountToken asks for a short-lived token of a service account, issued for audiences
// (the apiserver's own when none are given).
func (cp *ControlPlane) ServiceAccountToken(ctx context.Context, namespace, name string, audiences ...string) (string, error) {
	tr, err := cp.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// ShippedClusterRole reads a ClusterRole from deploy/ as it ships.
func ShippedClusterRole(name string) (*rbacv1.ClusterRole, error) {
	files, err := fs.Glob(deploy.Files, "*/*.yaml")
	if err != nil {
		return nil, err
	}
	for _, file := range files {
		docs, err := ShippedDocuments(file)
		if err != nil {
			return nil, err
		}
		for _, doc := range docs {
			var role rbacv1.ClusterRole
			if err := yaml.Unmarshal(doc, &role); err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			if role.Kind == "ClusterRole" && role.Name == name {
				return &role, nil
			}
		}
	}
	return nil, fmt.Errorf("deploy/ ships no ClusterRole %s", name)
}

// ShippedDocuments splits a file of deploy/ (e.g. "isolation/runtimeclass.yaml") into its YAML
// documents, leaving out empty ones.
func ShippedDocuments(file string) ([][]byte, error) {
	data, err := deploy.Files.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var docs [][]byte
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) > 0 {
			docs = append(docs, doc)
		}
	}
	return docs, nil
}

// BindClusterRole binds a ClusterRole to a service account and waits until the apiserver's
// authorizer allows the role's first rule for it: RBAC learns of bindings through an informer,
// and callers that raced it would be refused (and the audit API caches refusals for seconds).
func (cp *ControlPlane) BindClusterRole(ctx context.Context, bindingName, role, namespace, serviceAccount string) error {
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: bindingName},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: serviceAccount, Namespace: namespace}},
	}
	if _, err := cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		return err
	}
	cr, err := cp.Client.RbacV1().ClusterRoles().Get(ctx, role, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if len(cr.Rules) == 0 {
		return fmt.Errorf("ClusterRole %s has no rules", role)
	}
	rule := cr.Rules[0]
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   "system:serviceaccount:" + namespace + ":" + serviceAccount,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}}
	if len(rule.NonResourceURLs) > 0 {
		review.Spec.NonResourceAttributes = &authorizationv1.NonResourceAttributes{Path: rule.NonResourceURLs[0], Verb: rule.Verbs[0]}
	} else {
		review.Spec.ResourceAttributes = &authorizationv1.ResourceAttributes{Group: rule.APIGroups[0], Resource: rule.Resources[0], Verb: rule.Verbs[0]}
	}
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := cp.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		return err == nil && got.Status.Allowed, nil
	})
}
