package controlplane

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// ServingCertificate writes a certificate for 127.0.0.1 and localhost into dir. The certificate
// file holds the CA that signed it too, so it doubles as the client's CA bundle.
func ServingCertificate(dir string) (certFile, keyFile string, err error) {
	cert, key, err := certutil.GenerateSelfSignedCertKey("localhost", []net.IP{net.ParseIP("127.0.0.1")}, nil)
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

// ServiceAccountToken asks for a short-lived token of a service account.
func (cp *ControlPlane) ServiceAccountToken(ctx context.Context, namespace, name string) (string, error) {
	tr, err := cp.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// ShippedClusterRole reads a ClusterRole from deploy/base as it ships.
func ShippedClusterRole(name string) (*rbacv1.ClusterRole, error) {
	files, err := fs.Glob(deploy.Files, "base/*.yaml")
	if err != nil {
		return nil, err
	}
	for _, file := range files {
		data, err := deploy.Files.ReadFile(file)
		if err != nil {
			return nil, err
		}
		for _, doc := range bytes.Split(data, []byte("\n---\n")) {
			var role rbacv1.ClusterRole
			if err := yaml.Unmarshal(doc, &role); err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			if role.Kind == "ClusterRole" && role.Name == name {
				return &role, nil
			}
		}
	}
	return nil, fmt.Errorf("deploy/base ships no ClusterRole %s", name)
}
