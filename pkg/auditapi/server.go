package auditapi

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/request/headerrequest"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/client-go/kubernetes"
	"k8s.io/component-base/compatibility"
	"k8s.io/klog/v2"

	"github.com/repute-dev/repute/pkg/apis/repute/v1alpha1"
	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/reputation"
)

// Scheme holds the API's types, under v1 and as the internal version the generic server
// converts through (the same Go types: there is one version and no conversion); Codecs serve them.
var (
	Scheme = runtime.NewScheme()
	Codecs = serializer.NewCodecFactory(Scheme)
)

func init() {
	internal := schema.GroupVersion{Group: GroupName, Version: runtime.APIVersionInternal}
	for _, gv := range []schema.GroupVersion{SchemeGroupVersion, internal} {
		Scheme.AddKnownTypes(gv, &Decision{}, &DecisionList{}, &Image{}, &ImageList{}, &Policy{}, &PolicyList{},
			&ImageHistory{}, &HistoryOptions{}, &Simulation{})
	}
	// A history's query, GET images/NAME/history?limit=&continue=&from=&to=, read into its
	// options; the values are checked where the direct endpoint checks them.
	if err := Scheme.AddConversionFunc((*url.Values)(nil), (*HistoryOptions)(nil), func(a, b any, _ conversion.Scope) error {
		values, opts := a.(*url.Values), b.(*HistoryOptions)
		*opts = HistoryOptions{Continue: values.Get("continue"), From: values.Get("from"), To: values.Get("to")}
		if text := values.Get("limit"); text != "" {
			n, err := strconv.ParseInt(text, 10, 64)
			if err != nil {
				return fmt.Errorf("limit %q: not a number", text)
			}
			opts.Limit = n
		}
		return nil
	}); err != nil {
		panic(err) // static registrations
	}
	metav1.AddToGroupVersion(Scheme, SchemeGroupVersion)
	// The generic server decodes list and get options as the core group's v1.
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
	unversioned := schema.GroupVersion{Version: "v1"}
	Scheme.AddUnversionedTypes(unversioned, &metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
	// Field selectors beyond metadata.name and metadata.namespace, which the server would refuse.
	for kind, fields := range map[string][]string{"Decision": decisionFields, "Image": imageFields} {
		fields := append([]string{"metadata.name", "metadata.namespace"}, fields...)
		err := Scheme.AddFieldLabelConversionFunc(SchemeGroupVersion.WithKind(kind), func(label, value string) (string, string, error) {
			if !slices.Contains(fields, label) {
				return "", "", fmt.Errorf("field label not supported: %s", label)
			}
			return label, value, nil
		})
		if err != nil {
			panic(err) // static registrations
		}
	}
}

// Options say where the API listens and with which certificate, and where its data comes from.
type Options struct {
	// BindAddress is host:port; CertFile and KeyFile the serving certificate, which the
	// APIService's caBundle must verify for the Service's DNS name.
	BindAddress, CertFile, KeyFile string
	// Records are the store's; Verdicts the live cache's current verdicts.
	Records audit.Records
	// StoreReady says why the store failed, if it did (Records is nil then).
	StoreReady func() error
	Verdicts   func() (map[string]*reputation.Verdict, error)
	// Simulate answers a what-if from the evidence in memory; nil refuses simulations.
	Simulate func(context.Context, *v1alpha1.ReputationPolicy) (*audit.Simulation, error)
}

// Serve runs the API until ctx ends. Callers are authenticated as the kube-apiserver's
// aggregator vouches for them (the front proxy's client certificate and its X-Remote-* headers,
// as the cluster publishes them in kube-system/extension-apiserver-authentication), or directly
// by a client certificate or a token issued for the audit audience; every request is a
// SubjectAccessReview.
//
// A failed start releases what it took (its listener, its watches), so it can be tried again.
func Serve(ctx context.Context, client kubernetes.Interface, opts Options) (addr net.Addr, err error) {
	ctx, cancel := context.WithCancel(ctx)
	var listener net.Listener
	defer func() {
		if err != nil {
			cancel()
			if listener != nil {
				_ = listener.Close()
			}
		}
	}()
	host, portText, err := net.SplitHostPort(opts.BindAddress)
	if err != nil {
		return nil, fmt.Errorf("audit API bind address: %w", err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("audit API bind address: %w", err)
	}
	config := genericapiserver.NewConfig(Codecs)
	config.MaxRequestBodyBytes = audit.MaxSimulationBodyBytes // the largest body is a proposed policy
	config.EffectiveVersion = compatibility.NewEffectiveVersionFromString("1.37", "", "")
	namer := openapinamer.NewDefinitionNamer(Scheme)
	config.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(definitions, namer)
	config.OpenAPIConfig.Info.Title, config.OpenAPIConfig.Info.Version = "Repute audit", "v1"
	config.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(definitions, namer)
	config.OpenAPIV3Config.Info.Title, config.OpenAPIV3Config.Info.Version = "Repute audit", "v1"
	serving := genericoptions.NewSecureServingOptions().WithLoopback()
	serving.BindAddress, serving.BindPort = net.ParseIP(host), port
	if host == "" { // ":8445": every address, as the direct endpoint listens
		serving.BindAddress = net.IPv4zero // with network "tcp", every address, IPv6 too
	}
	if serving.BindAddress == nil {
		return nil, fmt.Errorf("audit API bind address %q: the host must be an IP address", opts.BindAddress)
	}
	serving.ServerCert.CertKey = genericoptions.CertKey{CertFile: opts.CertFile, KeyFile: opts.KeyFile}
	serving.ServerCert.CertDirectory = "" // without a certificate, a self-signed one in memory
	if err := serving.MaybeDefaultWithSelfSignedCerts("localhost", nil, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		return nil, err
	}
	if err := serving.ApplyTo(&config.SecureServing, &config.LoopbackClientConfig); err != nil {
		return nil, err
	}
	listener = config.SecureServing.Listener
	var clientCA dynamiccertificates.CAContentProvider
	if config.Authentication.Authenticator, config.Authentication.RequestHeaderConfig, clientCA, err = delegatedAuthentication(ctx, client); err != nil {
		return nil, err
	}
	// TLS asks for the client certificates both CAs sign: the front proxy's and callers' own.
	if err := config.Authentication.ApplyClientCert(clientCA, config.SecureServing); err != nil {
		return nil, err
	}
	if err := config.Authentication.ApplyClientCert(config.Authentication.RequestHeaderConfig.CAContentProvider, config.SecureServing); err != nil {
		return nil, err
	}
	if config.Authorization.Authorizer, err = (authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: client.AuthorizationV1(), AllowCacheTTL: 10 * time.Second, DenyCacheTTL: 10 * time.Second,
		WebhookRetryBackoff: genericoptions.DefaultAuthWebhookRetryBackoff(),
	}).New(); err != nil {
		return nil, err
	}
	genericapiserver.AuthorizeClientBearerToken(config.LoopbackClientConfig, &config.Authentication, &config.Authorization)
	server, err := config.Complete(nil).New("repute-audit", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, err
	}
	store := records{records: opts.Records, ready: opts.StoreReady}
	// The scheme's own parameter codec: it reads history options, and list and get options as
	// metav1's does.
	group := genericapiserver.NewDefaultAPIGroupInfo(GroupName, Scheme, runtime.NewParameterCodec(Scheme), Codecs)
	group.VersionedResourcesStorageMap[SchemeGroupVersion.Version] = map[string]rest.Storage{
		"decisions":      &decisions{store},
		"images":         &images{verdicts: opts.Verdicts},
		"images/history": &imageHistory{records: store, verdicts: opts.Verdicts},
		"policies":       &policies{store},
		"simulations":    &simulations{simulate: opts.Simulate},
	}
	if err := server.InstallAPIGroup(&group); err != nil {
		return nil, err
	}
	prepared := server.PrepareRun()
	go func() {
		defer cancel()
		if err := prepared.RunWithContext(ctx); err != nil {
			klog.FromContext(ctx).Error(err, "Aggregated audit API stopped")
		}
	}()
	return listener.Addr(), nil
}

// Run serves the API until ctx ends, starting it again after a failed start, with backoff: the
// API is for auditors, and its failing (the front proxy's configuration unreadable, its port
// taken) must not stop the scheduler from placing pods.
func Run(ctx context.Context, client kubernetes.Interface, opts Options) {
	logger := klog.FromContext(ctx)
	_ = retryBackoff.DelayFunc().Until(ctx, true, false, func(ctx context.Context) (bool, error) {
		addr, err := Serve(ctx, client, opts)
		if err != nil {
			logger.Error(err, "Aggregated audit API did not start; the scheduler runs on without it, and tries again")
			return false, nil
		}
		logger.Info("Aggregated audit API serving", "address", addr.String())
		return true, nil
	})
}

// retryBackoff spaces out attempts at what the audit APIs need from the cluster: 1 s, doubling,
// then every minute for as long as it takes (past the cap, DelayFunc keeps the cap).
var retryBackoff = wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.1, Cap: time.Minute, Steps: math.MaxInt32}

// delegatedAuthentication accepts the front proxy's requests as the cluster configures it, and
// client certificates and audit-audience tokens as the direct endpoint does.
func delegatedAuthentication(ctx context.Context, client kubernetes.Interface) (authenticator.Request, *authenticatorfactory.RequestHeaderConfig, dynamiccertificates.CAContentProvider, error) {
	const cm, ns = "extension-apiserver-authentication", metav1.NamespaceSystem
	proxy := headerrequest.NewRequestHeaderAuthRequestController(cm, ns, client, "requestheader-username-headers", "requestheader-uid-headers",
		"requestheader-group-headers", "requestheader-extra-headers-prefix", "requestheader-allowed-names")
	if err := proxy.RunOnce(ctx); err != nil {
		return nil, nil, nil, fmt.Errorf("reading the front proxy's configuration from %s/%s: %w", ns, cm, err)
	}
	go proxy.Run(ctx, 1)
	proxyCA, err := dynamiccertificates.NewDynamicCAFromConfigMapController("front-proxy-ca", ns, cm, "requestheader-client-ca-file", client)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := proxyCA.RunOnce(ctx); err != nil {
		return nil, nil, nil, err
	}
	go proxyCA.Run(ctx, 1)
	clientCA, err := dynamiccertificates.NewDynamicCAFromConfigMapController("client-ca", ns, cm, "client-ca-file", client)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := clientCA.RunOnce(ctx); err != nil {
		return nil, nil, nil, err
	}
	go clientCA.Run(ctx, 1)
	requestHeader := &authenticatorfactory.RequestHeaderConfig{
		CAContentProvider:   proxyCA,
		UsernameHeaders:     headerrequest.StringSliceProviderFunc(proxy.UsernameHeaders),
		UIDHeaders:          headerrequest.StringSliceProviderFunc(proxy.UIDHeaders),
		GroupHeaders:        headerrequest.StringSliceProviderFunc(proxy.GroupHeaders),
		ExtraHeaderPrefixes: headerrequest.StringSliceProviderFunc(proxy.ExtraHeaderPrefixes),
		AllowedClientNames:  headerrequest.StringSliceProviderFunc(proxy.AllowedClientNames),
	}
	authn, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		RequestHeaderConfig:                requestHeader,
		TokenAccessReviewClient:            client.AuthenticationV1(),
		APIAudiences:                       authenticator.Audiences{audit.Audience},
		TokenAccessReviewTimeout:           10 * time.Second,
		WebhookRetryBackoff:                genericoptions.DefaultAuthWebhookRetryBackoff(),
		CacheTTL:                           10 * time.Second,
		ClientCertificateCAContentProvider: clientCA,
	}.New()
	return authn, requestHeader, clientCA, err
}
