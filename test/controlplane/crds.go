package controlplane

import (
	"context"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/repute-dev/repute/deploy"
)

// ReputeCRDFile is Repute's own CRD, as deploy/crds ships it.
const ReputeCRDFile = "crds/repute.dev_reputationpolicies.yaml"

// InstallReputeCRDs installs the CRDs deploy/crds ships and waits until they are served.
func InstallReputeCRDs(ctx context.Context, cfg *rest.Config) error {
	data, err := deploy.Files.ReadFile(ReputeCRDFile)
	if err != nil {
		return err
	}
	return InstallCRDs(ctx, cfg, data)
}

// InstallCRDs creates CRDs from their YAML (decoded strictly) unless they exist, and waits
// until each is established, so objects created afterwards are validated by its schema.
func InstallCRDs(ctx context.Context, cfg *rest.Config, docs ...[]byte) error {
	client, err := apiextensions.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for _, data := range docs {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &crd); err != nil {
			return fmt.Errorf("decoding a CRD: %w", err)
		}
		if _, err := client.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, &crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating CRD %s: %w", crd.Name, err)
		}
		err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			got, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, c := range got.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established: %w", crd.Name, err)
		}
	}
	return nil
}
