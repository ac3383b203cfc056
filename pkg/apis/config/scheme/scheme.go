// Package scheme adds the Reputation plugin's args to kube-scheduler's config scheme. Blank-import
// it wherever a KubeSchedulerConfiguration with Reputation args is decoded: the scheduler's main
// and tests. kube-scheduler decodes that scheme strictly, so a misspelled field is a startup error
// that names the field.
package scheme

import (
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	schedscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"

	"github.com/repute-dev/repute/pkg/apis/config"
	configv1 "github.com/repute-dev/repute/pkg/apis/config/v1"
)

// Scheme is kube-scheduler's own config scheme, now with our args in it.
var Scheme = schedscheme.Scheme

// Codecs decode and encode with that scheme, strictly.
var Codecs = schedscheme.Codecs

func init() {
	utilruntime.Must(config.AddToScheme(Scheme))
	utilruntime.Must(configv1.AddToScheme(Scheme))
}
