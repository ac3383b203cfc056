// Command reputectl asks Repute what it decided, when and why. Installed as kubectl-repute on
// the PATH, it is also the kubectl plugin "kubectl repute".
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/repute-dev/repute/pkg/reputectl"
)

func main() {
	cmd := reputectl.NewCommand(os.Args[0], os.Stdout, os.Stderr)
	err := cmd.Execute()
	if err != nil && !errors.Is(err, reputectl.ErrDiffers) { // a difference was printed; it is no error
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	os.Exit(reputectl.ExitCode(err))
}
