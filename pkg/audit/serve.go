package audit

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/apiserver/pkg/server/options"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/serving"
)

// Audience is the audience a token must be issued for to be accepted here. The apiserver refuses
// such a token, and this API refuses tokens issued for the apiserver: a credential shown to one
// cannot be replayed against the other.
const Audience = "repute-audit"

// reviewCacheTTL is how long a TokenReview or SubjectAccessReview answer is reused: a revoked
// binding stops working within this time, and a busy auditor costs the apiserver little.
const reviewCacheTTL = 10 * time.Second

// Delegated returns the cluster's authentication and authorization, as kube-scheduler's secure
// port uses them: bearer tokens go to TokenReview, which must find them issued for Audience;
// client certificates are checked against the
// client CA the apiserver publishes in kube-system/extension-apiserver-authentication, and every
// request is a SubjectAccessReview. Anonymous requests are not authenticated.
func Delegated(ctx context.Context, client kubernetes.Interface) (authenticator.Request, authorizer.Authorizer, error) {
	logger := klog.FromContext(ctx)
	clientCA, err := dynamiccertificates.NewDynamicCAFromConfigMapController("client-ca", metav1.NamespaceSystem,
		"extension-apiserver-authentication", "client-ca-file", client)
	if err != nil {
		return nil, nil, err
	}
	if err := clientCA.RunOnce(ctx); err != nil {
		logger.Info("Audit API accepts bearer tokens only until the cluster's client CA can be read", "err", err)
	}
	go clientCA.Run(ctx, 1)
	authn, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		TokenAccessReviewClient:            client.AuthenticationV1(),
		APIAudiences:                       authenticator.Audiences{Audience},
		TokenAccessReviewTimeout:           10 * time.Second,
		WebhookRetryBackoff:                options.DefaultAuthWebhookRetryBackoff(),
		CacheTTL:                           reviewCacheTTL,
		ClientCertificateCAContentProvider: clientCA,
	}.New()
	if err != nil {
		return nil, nil, fmt.Errorf("audit API authentication: %w", err)
	}
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: client.AuthorizationV1(),
		AllowCacheTTL:             reviewCacheTTL,
		DenyCacheTTL:              reviewCacheTTL,
		WebhookRetryBackoff:       options.DefaultAuthWebhookRetryBackoff(),
	}.New()
	if err != nil {
		return nil, nil, fmt.Errorf("audit API authorization: %w", err)
	}
	return authn, authz, nil
}

// ServeOptions say where and with which certificate the API is served.
type ServeOptions struct {
	BindAddress, TLSCertFile, TLSKeyFile string
}

// Serve serves the API over TLS until ctx ends and returns the bound address.
func Serve(ctx context.Context, opts ServeOptions, s *Server) (net.Addr, error) {
	// Client certificates are asked for, not required: the authenticator verifies them against
	// the cluster's client CA, which can rotate, and bearer-token callers send none.
	tlsConfig, selfSigned, err := serving.DynamicTLS(ctx, "audit API", serving.TLSOptions{CertFile: opts.TLSCertFile, KeyFile: opts.TLSKeyFile,
		ClientAuth: tls.RequestClientCert})
	if err != nil {
		return nil, fmt.Errorf("audit API certificate: %w", err)
	}
	addr, err := serving.Listen(ctx, "audit API", opts.BindAddress, tlsConfig, s)
	if err != nil {
		return nil, err
	}
	klog.FromContext(ctx).Info("Audit API listening", "address", addr.String(), "path", PathPrefix, "selfSignedCertificate", selfSigned)
	return addr, nil
}
