// Package reputectl is the command line for auditors and operators: it reads Repute's audit API
// with the caller's kubeconfig credentials, or a store file offline. Installed as
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
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/reputation/store"
)

// DefaultAuditServer is the audit Service deploy/ ships, reachable from inside the cluster.
// From outside: kubectl -n kube-system port-forward svc/repute-audit 8444, then
// --audit-server https://localhost:8444.
const DefaultAuditServer = "https://repute-audit.kube-system.svc:8444"

// options are the flags every command shares.
type options struct {
	kubeconfig, context, user string
	auditServer, auditCA      string
	storeFile                 string
	output                    string
	in                        io.Reader // for -f -
	out, errOut               io.Writer

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
		Long: `reputectl reads Repute's audit API (audit.repute.dev/v1) with your kubeconfig credentials,
or a copy of the reputation store offline (--store). Access is granted with the ClusterRole
repute-auditor; backups need repute-audit-backup.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPostRunE: func(*cobra.Command, []string) error {
			if o.closeFn != nil {
				return o.closeFn()
			}
			return nil
		},
	}
	if strings.HasPrefix(filepath.Base(name), "kubectl-") {
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl repute"}
	}
	f := root.PersistentFlags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	f.StringVar(&o.context, "context", "", "kubeconfig context to use")
	f.StringVar(&o.user, "user", "", "kubeconfig user to use")
	f.StringVar(&o.auditServer, "audit-server", envOr("REPUTE_AUDIT_SERVER", DefaultAuditServer), "audit API URL ($REPUTE_AUDIT_SERVER)")
	f.StringVar(&o.auditCA, "audit-ca", os.Getenv("REPUTE_AUDIT_CA"), "CA bundle that signed the audit API's certificate ($REPUTE_AUDIT_CA)")
	f.StringVar(&o.storeFile, "store", "", "read this store file (a backup, or a copy) offline instead of the audit API")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table, json or yaml")

	root.AddCommand(newImagesCommand(o), newImageCommand(o), newHistoryCommand(o), newDecisionsCommand(o),
		newPolicyCommand(o), newBackupCommand(o))
	return root
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// client opens the store file or connects to the audit API as the kubeconfig's user.
func (o *options) client() (*audit.Client, error) {
	switch o.output {
	case "table", "json", "yaml":
	default:
		return nil, fmt.Errorf("--output %q: must be table, json or yaml", o.output)
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
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.context}
	overrides.Context.AuthInfo = o.user
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	kube, err := loader.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	if ns, _, err := loader.Namespace(); err == nil {
		o.namespace = ns
	}
	server, err := url.Parse(o.auditServer)
	if err != nil || server.Scheme != "https" || server.Host == "" {
		return nil, fmt.Errorf("--audit-server %q: must be an https:// URL", o.auditServer)
	}
	// The kubeconfig user's credentials (token, client certificate, exec plugin), but the audit
	// API's address and certificate authority, not the apiserver's.
	cfg := rest.CopyConfig(kube)
	cfg.Host = server.String()
	cfg.TLSClientConfig.CAFile, cfg.TLSClientConfig.CAData, cfg.TLSClientConfig.ServerName = o.auditCA, nil, ""
	cfg.TLSClientConfig.Insecure = false // the audit API is always verified: pass --audit-ca
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return &audit.Client{HTTP: hc, Server: cfg.Host}, nil
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
func (o *options) run(body func(ctx context.Context, c *audit.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		return o.explain(body(cmd.Context(), c, args))
	}
}
