package reputation

import (
	"context"
	"fmt"

	fwk "k8s.io/kube-scheduler/framework"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/audit"
	"github.com/repute-dev/repute/reputation"
	"github.com/repute-dev/repute/reputation/store"
)

// serveAudit starts the audit API in the scheduler process: the store is one bbolt file that
// only one process can open for writing, and a sidecar could not read it while the scheduler
// holds it. Current verdicts come from the live cache; the rest from the store.
func serveAudit(ctx context.Context, spec config.AuditAPI, h fwk.Handle, engine *reputation.Engine, st *store.Store) error {
	if spec.BindAddress == "" || h.ClientSet() == nil {
		return nil
	}
	authn, authz, err := audit.Delegated(ctx, h.ClientSet())
	if err != nil {
		return err
	}
	srv := &audit.Server{Images: engine.Cache().Snapshot, Authenticator: authn, Authorizer: authz}
	if st != nil {
		srv.Records, srv.Ready = st, st.Err
	}
	if _, err := audit.Serve(ctx, audit.ServeOptions{BindAddress: spec.BindAddress, TLSCertFile: spec.TLSCertFile, TLSKeyFile: spec.TLSKeyFile}, srv); err != nil {
		return fmt.Errorf("audit API: %w", err)
	}
	return nil
}
