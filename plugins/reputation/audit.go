package reputation

import (
	"context"
	"fmt"

	"github.com/repute-dev/repute/pkg/apis/config"
	"github.com/repute-dev/repute/pkg/audit"
)

// serveAudit starts the audit API in the scheduler process: the store is one bbolt file that
// only one process can open for writing, and a sidecar could not read it while the scheduler
// holds it. Current verdicts come from the live cache, simulations from the evidence in
// memory, the rest from the store.
func (pl *Reputation) serveAudit(ctx context.Context, spec config.AuditAPI) error {
	if spec.BindAddress == "" || pl.handle.ClientSet() == nil {
		return nil
	}
	authn, authz, err := audit.Delegated(ctx, pl.handle.ClientSet())
	if err != nil {
		return err
	}
	srv := &audit.Server{Images: pl.engine.Cache().Snapshot, Authenticator: authn, Authorizer: authz, Simulate: pl.simulate}
	switch {
	case pl.store != nil:
		srv.Records, srv.Ready = pl.store, pl.store.Err
	case pl.storeErr != nil:
		srv.Ready = func() error { return pl.storeErr }
	}
	if _, err := audit.Serve(ctx, audit.ServeOptions{BindAddress: spec.BindAddress, TLSCertFile: spec.TLSCertFile, TLSKeyFile: spec.TLSKeyFile}, srv); err != nil {
		return fmt.Errorf("audit API: %w", err)
	}
	return nil
}
