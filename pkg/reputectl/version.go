package reputectl

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/repute-dev/repute/pkg/version"
)

// versions is what reputectl version prints with -o json or yaml, shaped as kubectl version's.
type versions struct {
	Client version.Info  `json:"clientVersion"`
	Server *version.Info `json:"serverVersion,omitempty"`
}

func newVersionCommand(o *options) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print reputectl's version, and the scheduler's behind the audit API",
		Long: `Print reputectl's version and, unless --client, the version of the Repute scheduler that
serves the audit API (its /version, which any authenticated user may read). As kubectl version
does, it exits non-zero when the server cannot be asked, after printing the client's.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			v := versions{Client: version.Get()}
			var serverErr error
			if !clientOnly && o.storeFile == "" {
				c, err := o.client(cmd.Context())
				if err == nil {
					v.Server, err = c.Version(cmd.Context())
				}
				serverErr = o.explain(err)
			}
			if err := o.print(v, func(w io.Writer) {
				fmt.Fprintf(w, "Client Version: %s\n", v.Client)
				if v.Server != nil {
					fmt.Fprintf(w, "Server Version: %s\n", v.Server)
				}
			}); err != nil {
				return err
			}
			if serverErr != nil {
				return fmt.Errorf("server version: %w", serverErr)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print the client's version only; ask no server")
	return cmd
}
