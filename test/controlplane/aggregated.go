package controlplane

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/repute-dev/repute/pkg/auditapi"
)

// AuditService is the Service the aggregated audit API is registered behind here; its DNS name
// (AuditService.kube-system.svc) is the one the aggregator verifies the certificate for.
const AuditService = "repute-audit-aggregated"

var apiServices = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// RegisterAuditAPI registers the scheduler's aggregated audit API, listening on bindAddress
// (loopback), with this kube-apiserver, as deploy/ does in a cluster: the APIService
// v1.audit.repute.dev, verified with caFile (none: the scheduler keeping its certificate in a
// Secret sets the caBundle itself), behind AuditService. The Service is an
// ExternalName one for "localhost": the in-process apiserver resolves it to loopback, so no
// endpoints are needed. It returns once the APIService is Available; undo removes both.
func (cp *ControlPlane) RegisterAuditAPI(ctx context.Context, bindAddress, caFile string) (undo func(), err error) {
	_, portText, err := net.SplitHostPort(bindAddress)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseInt(portText, 10, 32)
	if err != nil {
		return nil, err
	}
	spec := map[string]any{"group": auditapi.GroupName, "version": "v1", "groupPriorityMinimum": int64(1000), "versionPriority": int64(100),
		"service": map[string]any{"namespace": metav1.NamespaceSystem, "name": AuditService, "port": port}}
	if caFile != "" {
		ca, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		spec["caBundle"] = base64.StdEncoding.EncodeToString(ca)
	}
	services := cp.Client.CoreV1().Services(metav1.NamespaceSystem)
	if _, err := services.Create(ctx, &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: AuditService},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "localhost", Ports: []v1.ServicePort{{Port: int32(port)}}},
	}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	registrations := dynamic.NewForConfigOrDie(cp.Config).Resource(apiServices)
	name := "v1." + auditapi.GroupName
	remove := func() {
		ctx := context.Background()
		_ = registrations.Delete(ctx, name, metav1.DeleteOptions{})
		_ = services.Delete(ctx, AuditService, metav1.DeleteOptions{})
	}
	defer func() {
		if err != nil {
			remove()
		}
	}()
	if _, err := registrations.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	var conditions string
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := registrations.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		found, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		conditions = fmt.Sprint(found)
		return strings.Contains(conditions, "type:Available") && strings.Contains(conditions, "status:True"), nil
	}); err != nil {
		return nil, fmt.Errorf("APIService %s never Available: %w; conditions %s", name, err, conditions)
	}
	return remove, nil
}
