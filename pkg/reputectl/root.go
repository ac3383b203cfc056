// Package reputectl is the command line for auditors and operators: it reads Repute's audit API
// with a credential that only the audit API accepts, or a store file offline. Installed as
// kubectl-repute it is the kubectl plugin "kubectl repute".
package reputectl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/reputation/store"
)

// DefaultAuditServer is the audit Service deploy/ ships, reachable from inside the cluster.
// From outside: kubectl -n kube-system port-forward svc/repute-audit 8444, then
// --audit-server https://localhost:8444.
const DefaultAuditServer = "https://repute-audit.kube-system.svc:8444"

// options are the flags every command shares.
type options struct {
	// kube is every kubectl flag (--kubeconfig, --context, -n, --server, --token, --as, …):
	// the credentials for the kube-apiserver, through which the aggregated API is read.
	kube                 *genericclioptions.ConfigFlags
	auditServer, auditCA string
	auditTokenFile       string
	auditServiceAccount  string
	storeFile            string
	output               string
	noHeaders            bool
	in                   io.Reader // for -f -
	out, errOut          io.Writer

	// namespace is the kubeconfig context's namespace, the default for namespaced queries.
	namespace string
	closeFn   func() error
}

// NewCommand builds the reputectl command tree. name is how it was invoked (os.Args[0]).
func NewCommand(name string, out, errOut io.Writer) *cobra.Command {
	o := &options{in: os.Stdin, out: out, errOut: errOut}
	root := &cobra.Command{
		Use:   "reputectl",
		Short: "Ask Repute what it decided, when and why",
		Long: `reputectl reads Repute's audit API (audit.repute.dev/v1) through the kube-apiserver, with your
kubeconfig and every kubectl flag, as kubectl would. Access is granted with the ClusterRole
repute-auditor; simulations need repute-policy-simulator.

With --audit-server it reads the scheduler's direct endpoint instead (in-cluster tools, and
backups, which need repute-audit-backup). It shows that endpoint your kubeconfig's client
certificate, or a token issued for the audience repute-audit (--audit-token-file,
--audit-service-account), never your apiserver token. With --store it reads a copy of the
reputation store offline.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPostRunE: func(*cobra.Command, []string) error {
			if o.closeFn != nil {
				return o.closeFn()
			}
			return nil
		},
	}
	root.SetOut(out) // help and shell completions too
	root.SetErr(errOut)
	if strings.HasPrefix(filepath.Base(name), "kubectl-") {
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl repute"}
	}
	f := root.PersistentFlags()
	o.kube = genericclioptions.NewConfigFlags(true)
	o.kube.Insecure = nil // no flag here skips TLS verification
	o.kube.AddFlags(f)
	_ = root.RegisterFlagCompletionFunc("namespace", o.completeNamespaces)
	f.StringVar(&o.auditServer, "audit-server", os.Getenv("REPUTE_AUDIT_SERVER"), "the direct audit endpoint's URL, e.g. "+DefaultAuditServer+
		"; without it, reputectl reads audit.repute.dev/v1 through the kube-apiserver with your kubeconfig ($REPUTE_AUDIT_SERVER)")
	f.StringVar(&o.auditCA, "audit-ca", os.Getenv("REPUTE_AUDIT_CA"), "CA bundle that signed the audit API's certificate ($REPUTE_AUDIT_CA)")
	f.StringVar(&o.auditTokenFile, "audit-token-file", os.Getenv("REPUTE_AUDIT_TOKEN_FILE"),
		"token for the audit API, issued for the audience "+audit.Audience+" (kubectl create token NAME --audience "+audit.Audience+", or a projected ServiceAccount token) ($REPUTE_AUDIT_TOKEN_FILE)")
	f.StringVar(&o.auditServiceAccount, "audit-service-account", "",
		"NAMESPACE/NAME: ask the apiserver, with your kubeconfig, for a 10-minute token of this ServiceAccount for the audience "+audit.Audience+", and use that")
	f.StringVar(&o.storeFile, "store", "", "read this store file (a backup, or a copy) offline instead of the audit API")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table, wide (every column in full), json, yaml, name, "+
		"jsonpath=..., jsonpath-file=..., custom-columns=..., custom-columns-file=..., go-template=..., go-template-file=...")
	f.BoolVar(&o.noHeaders, "no-headers", false, "leave out the header line of a list table or custom-columns")

	root.AddCommand(newImagesCommand(o), newImageCommand(o), newHistoryCommand(o), newDecisionsCommand(o),
		newPolicyCommand(o), newBackupCommand(o), newVersionCommand(o))
	return root
}

func (o *options) checkOutput() error {
	switch o.output {
	case "table", "wide", "json", "yaml", "name":
		return nil
	}
	if _, ok, err := kubectlPrinter(o.output, o.noHeaders); ok {
		if err != nil {
			return fmt.Errorf("--output %q: %w", o.output, err)
		}
		return nil
	}
	return fmt.Errorf("--output %q: must be table, wide, json, yaml, name, jsonpath=, jsonpath-file=, custom-columns=, custom-columns-file=, go-template= or go-template-file=", o.output)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// client opens the store file or connects to the audit API with a credential auditCredential
// picked.
func (o *options) client(ctx context.Context) (auditReader, error) {
	if err := o.checkOutput(); err != nil {
		return nil, err
	}
	if o.storeFile != "" {
		if _, err := os.Stat(o.storeFile); err != nil {
			return nil, fmt.Errorf("--store: %w", err)
		}
		st, err := store.Open(o.storeFile, store.Options{ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("--store %s: %w (a running scheduler holds its store locked: read a backup, or a copy)", o.storeFile, err)
		}
		o.closeFn = st.Close
		return audit.LocalClient(st), nil
	}
	loader := o.kube.ToRawKubeConfigLoader()
	kube, err := loader.ClientConfig()
	switch {
	case err != nil && o.auditTokenFile == "":
		return nil, fmt.Errorf("kubeconfig: %w", err)
	case err != nil: // a token file needs no kubeconfig: an in-cluster job with a projected token
		kube = &rest.Config{}
	}
	if ns, _, err := loader.Namespace(); err == nil {
		o.namespace = ns
	}
	if o.auditServer == "" { // the aggregated API, through the kube-apiserver, as kubectl would
		if err != nil {
			return nil, fmt.Errorf("kubeconfig: %w", err)
		}
		return newAggregatedReader(kube)
	}
	server, err := url.Parse(o.auditServer)
	if err != nil || server.Scheme != "https" || server.Host == "" {
		return nil, fmt.Errorf("--audit-server %q: must be an https:// URL", o.auditServer)
	}
	// The audit API's address and certificate authority, not the apiserver's; always verified.
	cfg := &rest.Config{Host: server.String(), UserAgent: kube.UserAgent, Timeout: kube.Timeout,
		TLSClientConfig: rest.TLSClientConfig{CAFile: o.auditCA}}
	if err := o.auditCredential(ctx, kube, cfg); err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return &audit.Client{HTTP: hc, Server: cfg.Host}, nil
}

// auditCredential sets what cfg shows the audit API. Never the kubeconfig's apiserver token:
// whoever answers at --audit-server (a compromised replica, a port-forward to the wrong pod)
// could replay it against the apiserver as you. What it gets instead cannot be replayed there:
// a token issued for the audience repute-audit (the apiserver refuses it), or a client
// certificate, whose key never leaves this machine.
func (o *options) auditCredential(ctx context.Context, kube, cfg *rest.Config) error {
	switch {
	case o.auditTokenFile != "" && o.auditServiceAccount != "":
		return errors.New("--audit-token-file and --audit-service-account: pass one")
	case o.auditTokenFile != "":
		if _, err := os.Stat(o.auditTokenFile); err != nil {
			return fmt.Errorf("--audit-token-file: %w", err)
		}
		cfg.BearerTokenFile = o.auditTokenFile // re-read as it rotates, as a projected token does
		return nil
	case o.auditServiceAccount != "":
		ns, name, ok := strings.Cut(o.auditServiceAccount, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("--audit-service-account %q: want NAMESPACE/NAME", o.auditServiceAccount)
		}
		client, err := kubernetes.NewForConfig(kube)
		if err != nil {
			return err
		}
		tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audit.Audience}, ExpirationSeconds: ptr.To[int64](600)},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("--audit-service-account %s: a token for the audit API: %w", o.auditServiceAccount, err)
		}
		cfg.BearerToken = tr.Status.Token
		return nil
	case (kube.CertFile != "" || len(kube.CertData) > 0) && (kube.KeyFile != "" || len(kube.KeyData) > 0):
		cfg.CertFile, cfg.CertData, cfg.KeyFile, cfg.KeyData = kube.CertFile, kube.CertData, kube.KeyFile, kube.KeyData
		return nil
	default:
		return fmt.Errorf("the audit API needs a client certificate or a token issued for it, and your kubeconfig user has no certificate; "+
			"reputectl does not send your apiserver token elsewhere. Pass --audit-token-file with the output of "+
			"'kubectl create token NAME --audience %s', or --audit-service-account NAMESPACE/NAME", audit.Audience)
	}
}

// explain adds a hint to errors that have a usual cause.
func (o *options) explain(err error) error {
	var dns *net.DNSError
	var op *net.OpError
	if o.storeFile == "" && (errors.As(err, &dns) || errors.As(err, &op)) {
		return fmt.Errorf("%w\nthe audit API is not reachable at %s; from outside the cluster run\n  kubectl -n kube-system port-forward svc/repute-audit 8444\nand pass --audit-server https://localhost:8444", err, o.auditServer)
	}
	return err
}

// run wraps a command body with the client and the error hints.
func (o *options) run(body func(ctx context.Context, c auditReader, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := o.client(cmd.Context())
		if err != nil {
			return err
		}
		return o.explain(body(cmd.Context(), c, args))
	}
}
