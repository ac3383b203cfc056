// Command reputectl asks Repute what it decided, when and why. Installed as kubectl-repute on
// the PATH, it is also the kubectl plugin "kubectl repute".
package main

import (
	"fmt"
	"os"

	"github.com/repute-dev/repute/pkg/reputectl"
)

func main() {
	cmd := reputectl.NewCommand(os.Args[0], os.Stdout, os.Stderr)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
